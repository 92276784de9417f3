"""Perturbed-Attention Guidance (Ahn et al. 2024, "Self-Rectifying Diffusion Sampling with
Perturbed-Attention Guidance"): its parameters, as diffusers' PAG pipelines name them."""
from ..attention.dit_blocks import BLOCK_KEY
from ..attention.math import identity_attention, image_identity_with_text
from ..attention.router import AttentionHook, Method
from ..attention.step_window import Schedule
from ..guidance.pag import pag_guidance, pag_scale
from ..guidance.rescale import rescale_denoised
from .build import Built
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

def auto_layers(family, layers):
    """What 'auto' stands for on a model of `family`: the layers the reference perturbs."""
    return {"unet": "m0", "sd3": "j1", "flux": "s0", "qwen_image": "j1"}[family]


def build(target, scale, adaptive_scale, layers, rescale, start_percent, end_percent):
    """PAG's perturbed copies of the conditional rows (Method(..., extra_cond_rows=True)) and the
    guidance from them after CFG (methods/build.py)."""
    selected = target.select(layers, "layers", auto_layers(target.family, target.layers))
    if scale == 0:
        return Built()
    key = target.key

    def post_cfg(step):
        perturbed = step.copies(key)
        if perturbed is None:
            return step.denoised
        s = pag_scale(scale, adaptive_scale, step.timestep) if adaptive_scale > 0 else scale
        out = pag_guidance(step.denoised, step.cond_denoised, perturbed, s)
        if rescale > 0 and step.ctx.cfg > 1:
            out = rescale_denoised(step.x, step.sigma, out, step.cond_denoised, rescale)
        return out

    return Built(pag_method(key, target.family, selected, start_percent, end_percent), post_cfg)


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
