"""A small k-diffusion/ComfyUI-style host around a diffusers UNet, for the reference tests.

* Sampling is Euler in sigma space: x = x0 + sigma * eps, a model call returns the denoised
  prediction D(x, sigma) = x - sigma * eps with eps = unet(x * c_in, t, cond), c_in = 1/sqrt(sigma^2 + 1).
  On the sigmas of a DDIM(eta=0) schedule this is exactly the DDIM sampler (reference-algorithms.md
  section 2, "Key identity"): x_init = latents / sqrt(abar_first), result * sqrt(abar_final).
* A model call takes several conds at once and labels the batch chunks with their index into the
  step's conds list ("cond_or_uncond"), as ComfyUI does; the step context and row roles come from
  attnguide's Router, exactly as the ComfyUI glue passes them.
* The chosen self-attention (attn1) modules get a diffusers attention processor that projects
  q/k/v with the module's own weights and hands them to Router.attend; the default kernel is
  scaled-dot-product attention. Layers are named with ComfyUI block addresses (Layer).
* After CFG, post-CFG functions see the same arguments a ComfyUI post-CFG function would.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from attnguide.attention.layers import Layer
from attnguide.attention.math import merge_heads, split_heads
from attnguide.attention.router import ROLES_KEY, STEP_KEY, Router


@dataclass
class SigmaSchedule:
    sigmas: list        # steps + 1 floats, descending
    timesteps: list     # the UNet's timestep for each step
    scale_in: float     # x_init = diffusers' initial latents * scale_in
    scale_out: float    # diffusers' final latents = x_final * scale_out


def ddim_schedule(scheduler, steps):
    """The sigmas of a DDIMScheduler's timesteps, ending at its final_alpha_cumprod."""
    scheduler.set_timesteps(steps)
    abar = scheduler.alphas_cumprod.double()
    timesteps = list(scheduler.timesteps)
    final = float(scheduler.final_alpha_cumprod)
    sigmas = [math.sqrt((1 - float(abar[t])) / float(abar[t])) for t in timesteps]
    sigmas.append(math.sqrt((1 - final) / final))
    return SigmaSchedule(sigmas, timesteps, 1 / math.sqrt(float(abar[timesteps[0]])), math.sqrt(final))


def euler_schedule(scheduler, steps):
    """EulerDiscreteScheduler already works in sigma space; its latents are x."""
    scheduler.set_timesteps(steps)
    return SigmaSchedule([float(s) for s in scheduler.sigmas], list(scheduler.timesteps),
                         float(scheduler.init_noise_sigma), 1.0)


def comfy_layer(module_name, layers_per_block):
    """ComfyUI address of a diffusers attn1 module, e.g. mid_block.attentions.0.transformer_blocks.1.attn1 -> m0.1.

    ComfyUI's input_blocks are conv_in, then per level layers_per_block blocks and a downsample;
    output_blocks have layers_per_block + 1 blocks per level, like diffusers' up blocks."""
    parts = module_name.split(".")
    if parts[-1] != "attn1" or "transformer_blocks" not in parts:
        return None
    depth = int(parts[parts.index("transformer_blocks") + 1])
    if parts[0] == "mid_block":
        return Layer("middle", 0, depth)
    level, index = int(parts[1]), int(parts[3])
    if parts[0] == "down_blocks":
        return Layer("input", 1 + level * (layers_per_block + 1) + index, depth)
    if parts[0] == "up_blocks":
        return Layer("output", level * (layers_per_block + 1) + index, depth)
    return None


def _layers_per_block(unet):
    lpb = unet.config.layers_per_block
    if not isinstance(lpb, int):
        assert len(set(lpb)) == 1, "the tests only use a uniform layers_per_block"
        lpb = lpb[0]
    return lpb


def host_layers(unet):
    """Every self-attention layer of the UNet with its ComfyUI address, in module order."""
    lpb = _layers_per_block(unet)
    names = (comfy_layer(n, lpb) for n, m in unet.named_modules())
    return [layer for layer in names if layer is not None]


def sdpa(q, k, v, heads):
    """The host's own attention kernel (what diffusers' AttnProcessor2_0 computes)."""
    out = F.scaled_dot_product_attention(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads))
    return merge_heads(out)


class RoutedSelfAttention:
    """diffusers attention processor: projections of the module, attention through the router."""

    def __init__(self, host, layer):
        self.host, self.layer = host, layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        assert encoder_hidden_states is None and attention_mask is None and hidden_states.ndim == 3
        assert attn.spatial_norm is None and attn.group_norm is None and attn.norm_q is None
        residual = hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        heads = attn.heads
        self.host.attn_calls += 1
        out = self.host.router.attend(q, k, v, heads, self.layer, self.host.options,
                                      lambda q, k, v, *labels: sdpa(q, k, v, heads))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@dataclass
class Cond:
    context: torch.Tensor          # encoder_hidden_states, (b, tokens, dim)
    added: dict = None             # SDXL added_cond_kwargs (text_embeds, time_ids), batch b


class SigmaHost:
    def __init__(self, unet, router=None):
        self.unet = unet
        self.router = router if router is not None else Router()
        self.options = {}
        self.attn_calls = 0
        self.model_calls = []      # batch size of every UNet call

    def _install(self):
        lpb = _layers_per_block(self.unet)
        processors = {}
        for name, proc in self.unet.attn_processors.items():
            layer = comfy_layer(name[:-len(".processor")], lpb)
            processors[name] = RoutedSelfAttention(self, layer) if layer in self.router.layers else proc
        self.unet.set_attn_processor(processors)

    def model(self, x, sigma, timestep, conds, labels, ctx, roles):
        """One UNet call over len(conds) chunks of x; returns the denoised prediction of each chunk."""
        b = x.shape[0]
        c_in = 1.0 / math.sqrt(sigma ** 2 + 1.0)
        context = torch.cat([c.context for c in conds])
        added = None
        if conds[0].added is not None:
            added = {k: torch.cat([c.added[k] for c in conds]) for k in conds[0].added}
        self.options = {"cond_or_uncond": list(labels), STEP_KEY: ctx, ROLES_KEY: roles}
        self.model_calls.append(b * len(conds))
        try:
            eps = self.unet(torch.cat([x] * len(conds)) * c_in, timestep, encoder_hidden_states=context,
                            added_cond_kwargs=added).sample
        finally:
            self.options = {}
        return [x - sigma * e for e in eps.split(b)]

    def extra(self, x, sigma, timestep, conds, ctx):
        """An extra call from a post-CFG function: no row has a role, so no hook acts (like run_extra)."""
        return self.model(x, sigma, timestep, conds, list(range(len(conds))), ctx, [None] * len(conds))

    def sample(self, latents, schedule, cond, uncond, cfg, post_cfg=()):
        original = self.unet.attn_processors
        self._install()
        try:
            return self._sample(latents * schedule.scale_in, schedule, cond, uncond, cfg, post_cfg) * schedule.scale_out
        finally:
            self.unet.set_attn_processor(dict(original))

    def _sample(self, x, schedule, cond, uncond, cfg, post_cfg):
        sigmas = schedule.sigmas
        run = {}  # the generation's state methods keep across steps (SEGA's momentum), as the hosts keep it
        for i, t in enumerate(schedule.timesteps):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            ctx = self.router.begin_step(sigma, sigmas, cfg)
            ctx.run = run
            conds = [cond, uncond if cfg > 1 else None]   # ComfyUI skips uncond at cfg 1
            all_conds, roles = self.router.extend_main_batch(ctx, conds)
            labels = [j for j, c in enumerate(all_conds) if c is not None]
            outs = dict(zip(labels, self.model(x, sigma, t, [all_conds[j] for j in labels], labels, ctx, roles)))
            ctx.main_done = True
            for j in range(len(conds), len(all_conds)):
                ctx.extra_outputs[roles[j]] = outs[j]
            cond_d, uncond_d = outs[0], outs.get(1)
            denoised = cond_d if uncond_d is None else uncond_d + (cond_d - uncond_d) * cfg
            args = {"input": x, "sigma": sigma, "timestep": t, "cond": cond, "uncond": conds[1],
                    "cond_denoised": cond_d, "uncond_denoised": uncond_d, "denoised": denoised,
                    "ctx": ctx, "host": self}
            for fn in post_cfg:
                args["denoised"] = fn(args)
            d = args["denoised"]
            x = d + (x - d) * (sigma_next / sigma) if sigma_next > 0 else d
        return x
