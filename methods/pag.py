"""Perturbed-Attention Guidance (Ahn et al. 2024, "Self-Rectifying Diffusion Sampling with
Perturbed-Attention Guidance"): its parameters, as diffusers' PAG pipelines name them."""
from ..attention.dit_blocks import BLOCK_KEY
from ..attention.math import identity_attention, image_identity_with_text
from ..attention.router import AttentionHook, Method, step_context
from ..attention.step_window import Schedule
from ..guidance.pag import pag_guidance, pag_scale
from ..guidance.rescale import rescale_denoised
from .spec import STEP_WINDOW, MethodSpec, Param

SPEC = MethodSpec(
    "pag", "Perturbed-Attention Guidance (AttnGuide)", "PAG", "AttnGuidePAG", img2img=True, hires="apply",
    params=(
        Param("scale", "float", 3.0, "Scale", minimum=0.0, maximum=100.0, step=0.01, round=0.01,
              tooltip="PAG scale (diffusers and ComfyUI default 3.0). 0 turns it off."),
        Param("adaptive_scale", "float", 0.0, "Adaptive scale", minimum=0.0, maximum=1.0, step=0.0001, round=0.0001,
              tooltip="Lower the scale as sampling proceeds: scale - adaptive_scale * (1000 - "
                      "timestep), never below 0 (diffusers' pag_adaptive_scale). 0 keeps it constant."),
        Param("layers", "text", "auto", "Layers",
              tooltip="Self-attention layers to perturb: d/m/u + block[.depth] on UNets, j/s + block on DiTs, "
                      "ranges with '-', comma separated. 'auto' = the reference's layers: m0 on UNets (every "
                      "transformer of the middle block, diffusers' 'mid', ComfyUI's built-in node), j1 on SD3 "
                      "(StableDiffusion3PAGPipeline's 'blocks.1'), s0 on Flux-family, j1 on Qwen-Image."),
        Param("rescale", "float", 0.0, "Rescale", minimum=0.0, maximum=1.0, step=0.01,
              tooltip="Guidance rescale (diffusers' guidance_rescale) applied to the CFG+PAG result "
                      "against the conditional prediction; only with CFG > 1. 0 = off."),
        *STEP_WINDOW,
    ))

AUTO_LAYERS = {"unet": "m0", "sd3": "j1", "flux": "s0", "qwen_image": "j1"}


def perturbed_attention(family):
    """The attention of a perturbed layer, as the reference for that family has it: the identity
    map on UNets (the paper) and in diffusers' model-agnostic PAG guider (Flux, Qwen-Image: every
    token keeps its value); on SD3 StableDiffusion3PAGPipeline's joint form, where image tokens
    see only themselves and the text."""
    if family == "sd3":
        def perturb(q, k, v, heads, ctx, options, next):
            return image_identity_with_text(q, k, v, heads, options[BLOCK_KEY].text_tokens, next)
    else:
        def perturb(q, k, v, heads, ctx, options, next):
            return identity_attention(q, k, v, heads)
    return perturb


def pag_method(key, family, layers, start_percent, end_percent):
    """The router Method of PAG: perturbed copies of the conditional rows in the main call."""
    hook = AttentionHook(frozenset(layers), lambda ctx: {key}, perturbed_attention(family))
    return Method(key, Schedule(start_percent, end_percent), (hook,), extra_cond_rows=True)


# What every host installs, for hosts that call post-CFG functions with ComfyUI's arguments (ComfyUI,
# Forge, reForge). The adapter gives what differs: run_extra(args, conds, x) -> predictions of an extra
# model call; timestep(args) -> the model's timestep at args["sigma"].


def pag_post_cfg(key, scale, adaptive_scale, rescale, timestep):
    """Post-CFG function of Perturbed-Attention Guidance whose perturbed rows are the router's
    extra conditional rows of method `key` (Method(..., extra_cond_rows=True))."""
    def post_cfg(args):
        ctx = step_context(args["model_options"])
        perturbed = ctx.extra_outputs.get(key) if ctx is not None else None
        if perturbed is None:
            return args["denoised"]
        s = pag_scale(scale, adaptive_scale, timestep(args).flatten()[0])
        out = pag_guidance(args["denoised"], args["cond_denoised"], perturbed, s)
        if rescale > 0 and ctx.cfg > 1:
            out = rescale_denoised(args["input"], args["sigma"], out, args["cond_denoised"], rescale)
        return out
    return post_cfg
