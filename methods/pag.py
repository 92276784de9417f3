"""Perturbed-Attention Guidance (Ahn et al. 2024, "Self-Rectifying Diffusion Sampling with
Perturbed-Attention Guidance"): its parameters, as diffusers' PAG pipelines name them."""
from .spec import STEP_WINDOW, MethodSpec, Param

SPEC = MethodSpec(
    "pag", "Perturbed-Attention Guidance (AttnGuide)", "PAG", "AttnGuidePAG", img2img=True, hires="apply",
    params=(
        Param("scale", "float", 3.0, "Scale", minimum=0.0, maximum=100.0, step=0.01, round=0.01,
              tooltip="PAG scale (diffusers and ComfyUI default 3.0). 0 turns it off."),
        Param("adaptive_scale", "float", 0.0, "Adaptive scale", minimum=0.0, maximum=1.0, step=0.0001, round=0.0001,
              tooltip="Lower the scale as sampling proceeds: scale - adaptive_scale * (1000 - "
                      "timestep), never below 0 (diffusers' pag_adaptive_scale). 0 keeps it constant."),
        Param("layers", "text", "m0", "Layers",
              tooltip="Self-attention layers to perturb: d/m/u + block[.depth], ranges with '-', "
                      "comma separated (ComfyUI block ids). Default m0: every transformer of the "
                      "middle block, as diffusers' 'mid' and ComfyUI's built-in node."),
        Param("rescale", "float", 0.0, "Rescale", minimum=0.0, maximum=1.0, step=0.01,
              tooltip="Guidance rescale (diffusers' guidance_rescale) applied to the CFG+PAG result "
                      "against the conditional prediction; only with CFG > 1. 0 = off."),
        *STEP_WINDOW,
    ))
