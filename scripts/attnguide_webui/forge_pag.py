"""Perturbed-Attention Guidance on a Forge/reForge patcher (the ComfyUI node's behaviour, nodes/pag.py).
The perturbed rows run in the same UNet call as cond/uncond."""
from ...attention.math import identity_attention
from ...attention.router import AttentionHook, Method, step_context
from ...guidance.pag import pag_guidance, pag_scale
from ...guidance.rescale import rescale_denoised
from ...guidance.schedule import Schedule
from .forge_params import layers_of, method_key
from .forge_router import host, install


def apply_pag(patcher, scale, adaptive_scale, layers, rescale, start_percent, end_percent, sigmas=None):
    selected = layers_of(patcher, layers, "layers", "Perturbed-Attention Guidance")
    schedule = Schedule(start_percent, end_percent)
    m = patcher.clone()
    if scale == 0:
        return m
    key = method_key(m, "pag")

    def perturb(q, k, v, heads, ctx, options, next):
        return identity_attention(q, k, v, heads)

    def post_cfg(args):
        ctx = step_context(args["model_options"])
        perturbed = ctx.extra_outputs.get(key) if ctx is not None else None
        if perturbed is None:
            return args["denoised"]
        timestep = host(args["model_options"]).timestep(args["model"], args["sigma"]).flatten()[0]
        out = pag_guidance(args["denoised"], args["cond_denoised"], perturbed, pag_scale(scale, adaptive_scale, timestep))
        if rescale > 0 and ctx.cfg > 1:
            out = rescale_denoised(args["input"], args["sigma"], out, args["cond_denoised"], rescale)
        return out

    hook = AttentionHook(frozenset(selected), lambda ctx: {key}, perturb)
    install(m, Method(key, schedule, (hook,), extra_cond_rows=True), sigmas)
    m.set_model_sampler_post_cfg_function(post_cfg)
    return m
