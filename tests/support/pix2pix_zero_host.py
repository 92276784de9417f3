"""Pix2Pix-Zero on a sigma-space host around a diffusers UNet: attnguide's core
(guidance.pix2pix_zero, attention.cross_maps) driving the UNet, sampled with Euler on DDIM's
sigmas (which is DDIM). Reference and edit pass run in lockstep; only one step of maps is held.
"""
import math

import torch
import torch.nn.functional as F

from attnguide.attention.cross_maps import ReferenceMaps, attention_from_probs, cross_attention_probs
from attnguide.attention.math import merge_heads, split_heads
from attnguide.guidance import pix2pix_zero as p2pz


class CrossAttention:
    """diffusers processor for attn2: records the reference's maps, or adds this forward's
    loss against them, or plain SDPA."""

    def __init__(self):
        self.mode, self.store, self.key, self.loss, self.halves = None, None, None, None, 2
        self.held = 0   # most bytes of reference maps held at once

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        q = attn.to_q(hidden_states)
        k, v = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        h = attn.heads
        if self.mode is None:
            out = merge_heads(F.scaled_dot_product_attention(split_heads(q, h), split_heads(k, h), split_heads(v, h)))
        else:
            probs = cross_attention_probs(q, k, h)
            if self.mode == "record":
                self.store.record(self.key, probs)
                self.held = max(self.held, self.store.nbytes())
            else:
                term = p2pz.map_loss(probs, self.store.next(self.key), self.halves)
                self.loss = term if self.loss is None else self.loss + term
            out = attention_from_probs(probs, v, h)
        return attn.to_out[1](attn.to_out[0](out))


class Host:
    def __init__(self, unet, timesteps):
        self.unet, self.timesteps = unet, timesteps   # sigma -> UNet timestep
        self.attn = CrossAttention()
        self.calls = {"grad": 0, "plain": 0}

    def __enter__(self):
        self.original = self.unet.attn_processors
        self.unet.set_attn_processor({n: (self.attn if ".attn2." in n else p) for n, p in self.original.items()})
        return self

    def __exit__(self, *exc):
        self.unet.set_attn_processor(dict(self.original))

    def denoise(self, x, sigma, context, mode=None, key=None):
        """D(x, sigma) = x - sigma * eps(c_in * x)."""
        self.attn.mode, self.attn.key = mode, key
        self.calls["grad" if torch.is_grad_enabled() and x.requires_grad else "plain"] += 1
        try:
            eps = self.unet(x * p2pz.default_c_in(sigma), self.timesteps[sigma], encoder_hidden_states=context).sample
        finally:
            self.attn.mode = None
        return x - sigma * eps


def _timesteps(schedule):
    return {s: t for s, t in zip(schedule.sigmas, schedule.timesteps)}


def invert(unet, schedule, latents, cond, settings, seed):
    """diffusers' invert(latents at the last level) -> latents at the first level (VP units)."""
    levels = dict(_timesteps(schedule))
    with Host(unet, levels) as host, torch.no_grad():
        x = latents / schedule.scale_out
        x = p2pz.invert(x, schedule.sigmas, lambda x, s: host.denoise(x, s, cond), settings,
                        p2pz.roll_generators(seed, x.shape[0]))
    return x / schedule.scale_in


def edit(unet, schedule, latents, cond, uncond, direction, cfg, amount, dtype=torch.float32, record=None):
    """diffusers' edit call from x_T (VP units) -> final latents (VP units)."""
    sigmas = schedule.sigmas
    edit_cond = p2pz.add_direction(cond, direction)
    with Host(unet, _timesteps(schedule)) as host, torch.no_grad():
        x_ref = x = latents * schedule.scale_in
        for i in range(len(schedule.timesteps)):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            host.attn.store = ReferenceMaps(dtype)
            d_ref_u = host.denoise(x_ref, sigma, uncond, "record", "uncond")
            d_ref_c = host.denoise(x_ref, sigma, cond, "record", "cond")
            d_ref = d_ref_u + cfg * (d_ref_c - d_ref_u)

            def loss(xu, xc):
                host.attn.loss = None
                host.denoise(xu, sigma, uncond, "loss", "uncond")
                host.denoise(xc, sigma, edit_cond, "loss", "cond")
                return host.attn.loss

            x_u, x_c = p2pz.guided_latents(x, loss, amount, p2pz.default_c_in(sigma))
            d_u = host.denoise(x_u, sigma, uncond)
            d_c = p2pz.cond_at(x_u, x_c, host.denoise(x_c, sigma, edit_cond))
            d = p2pz.edit_denoised(x, x_u, d_u + cfg * (d_c - d_u), sigma, sigma_next)
            x = d + (x - d) * (sigma_next / sigma)
            x_ref = d_ref + (x_ref - d_ref) * (sigma_next / sigma)
            host.attn.store = None
        if record is not None:
            record.update(host.calls, held=host.attn.held, ref=x_ref * schedule.scale_out)
    return x * schedule.scale_out
