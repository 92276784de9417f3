"""Attend-and-Excite on the sigma-space host of sigma_host.py: attnguide's core
(guidance.attend_excite, attention.cross_maps, guidance.latent_update) driving a diffusers
UNet, sampled with Euler on DDIM's sigmas. Shared by the reference test and the
diffusers-vs-ComfyUI comparison."""
import math

import torch
import torch.nn.functional as F

from attnguide.attention.cross_maps import MapStore
from attnguide.attention.math import merge_heads, split_heads
from attnguide.guidance.attend_excite import excite_latent
from attnguide.guidance.latent_update import moved_latent_denoised


class CaptureCrossAttention:
    """diffusers processor for attn2: attention through the active MapStore, else SDPA."""

    def __init__(self):
        self.store = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        q = attn.to_q(hidden_states)
        k, v = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        if self.store is not None:
            out = self.store.attend(q, k, v, attn.heads)
        else:
            h = attn.heads
            out = merge_heads(F.scaled_dot_product_attention(split_heads(q, h), split_heads(k, h), split_heads(v, h)))
        return attn.to_out[1](attn.to_out[0](out))


def sample(unet, schedule, latents, cond, uncond, cfg, settings, grid=(16, 16), counts=None):
    """Returns (final latents in diffusers' units, maps per step)."""
    capture = CaptureCrossAttention()
    original = unet.attn_processors
    unet.set_attn_processor({n: (capture if ".attn2." in n else p) for n, p in original.items()})
    counts = counts if counts is not None else {"grad": 0, "cfg": 0}
    try:
        x = latents * schedule.scale_in
        sigmas, steps = schedule.sigmas, len(schedule.timesteps)
        for i, t in enumerate(schedule.timesteps):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            c_in = 1.0 / math.sqrt(sigma ** 2 + 1.0)

            def evaluate(xi, item):
                capture.store = MapStore(grid[0] * grid[1])
                counts["grad"] += 1
                try:
                    with torch.enable_grad():
                        unet(xi * c_in, t, encoder_hidden_states=cond[item:item + 1])
                    return capture.store.mean()[0].reshape(*grid, -1)
                finally:
                    capture.store = None

            moved = []
            for item in range(x.shape[0]):
                xi, _, _ = excite_latent(x[item:item + 1], i, steps, c_in, settings, lambda xi: evaluate(xi, item))
                moved.append(xi)
            moved = torch.cat(moved)
            counts["cfg"] += 1
            with torch.no_grad():
                eps = unet(torch.cat([moved] * 2) * c_in, t, encoder_hidden_states=torch.cat([uncond, cond])).sample
            e_u, e_c = eps.chunk(2)
            d = moved - sigma * (e_u + cfg * (e_c - e_u))
            d = moved_latent_denoised(x, moved, d, sigma, sigma_next)
            x = d + (x - d) * (sigma_next / sigma) if sigma_next > 0 else d
        return x * schedule.scale_out
    finally:
        unet.set_attn_processor(dict(original))
