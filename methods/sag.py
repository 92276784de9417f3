"""Self-Attention Guidance (Hong et al. 2023, "Improving Sample Quality of Diffusion Models Using
Self-Attention Guidance"): its parameters, as diffusers' StableDiffusionSAGPipeline names them."""
import torch

from ..attention.dit_blocks import BLOCK_KEY
from ..attention.math import attention_with_key_mass, self_attention_key_mass
from ..attention.layers import LayerSelectionError
from ..attention.router import COND, UNCOND, AttentionHook, Method
from ..attention.step_window import Schedule
from ..guidance import sag
from .build import Built
from .spec import STEP_WINDOW, MethodSpec, Param

SPEC = MethodSpec(
    "sag", "Self-Attention Guidance (AttnGuide)", "SAG", "AttnGuideSAG", img2img=True, hires="apply",
    params=(
        Param("scale", "float", 0.75, "Scale", minimum=-10.0, maximum=10.0, step=0.01, round=0.01,
              tooltip="SAG scale. 0.75 is the diffusers default; ComfyUI's built-in node uses 0.5."),
        Param("blur_sigma", "float", 1.0, "Blur sigma", minimum=0.0, maximum=10.0, step=0.1,
              tooltip="Sigma of the 9x9 Gaussian blur of the masked regions. 1.0 is the diffusers "
                      "default; ComfyUI's built-in node uses 2.0."),
        Param("threshold", "float", 1.0, "Mask threshold", minimum=0.0, maximum=10.0, step=0.01,
              tooltip="Blur where a position receives more than this total attention (head-averaged, "
                      "summed over queries; the mean is exactly 1). 1.0 in diffusers and ComfyUI."),
        Param("layer", "text", "auto", "Layer",
              tooltip="Self-attention layer whose map picks the regions to blur: d/m/u + block.depth on UNets, "
                      "j/s + block on DiTs. 'auto' = m0.0 on UNets (the first transformer of the middle block, "
                      "as in diffusers), the middle joint block on DiTs (image tokens' attention among "
                      "themselves)."),
        *STEP_WINDOW,
    ))

def auto_layers(family, layers):
    """What 'auto' stands for on a model of `family` with these layers: the reference's m0.0 on UNets,
    the middle joint block on DiTs."""
    if family == "unet":
        return "m0.0"
    joint = [layer for layer in layers if layer.kind == "joint"]
    return str(joint[len(joint) // 2])


def build(target, scale, blur_sigma, threshold, layer, start_percent, end_percent):
    """SAG's capture of one layer's attention on the guided branch, and after CFG the degraded
    branch's extra pass and the guidance from it (methods/build.py)."""
    selected = target.select(layer, "layer", auto_layers(target.family, target.layers))
    if len(selected) != 1:
        raise LayerSelectionError(f"layer: SAG reads one layer, '{layer}' selects {len(selected)} "
                                  f"({', '.join(map(str, selected))}). Name one, e.g. '{selected[0]}'.")
    if scale == 0:
        return Built()
    key = target.key
    branch = lambda ctx: {UNCOND} if ctx.cfg > 1 else {COND}

    def capture(q, k, v, heads, ctx, options, next):
        block = options.get(BLOCK_KEY)
        if block is not None:  # a DiT's joint attention: the image tokens' attention among themselves
            t, n = block.text_tokens, block.grid[0] * block.grid[1]
            out, mass, grid = next(q, k, v), self_attention_key_mass(q[:, t:t + n], k[:, t:t + n], heads), block.grid
        else:
            out, mass = attention_with_key_mass(q, k, v, heads)
            shape = options.get("activations_shape")  # ComfyUI gives it; A1111 and Forge do not (the latent's size is used)
            grid = tuple(shape[-2:]) if shape is not None else None
        captured = ctx.captures.setdefault(key, {})
        labels = options["cond_or_uncond"]
        for label, rows in zip(labels, mass.split(mass.shape[0] // len(labels))):
            captured[label] = (rows, grid)
        return out

    def post_cfg(step):
        guided = UNCOND if step.ctx.cfg > 1 and step.uncond_denoised is not None else COND
        captured = step.ctx.captures.get(key, {})
        labels = step.branch_labels(guided)
        if key not in step.ctx.active or not labels or any(label not in captured for label in labels):
            return step.denoised
        mass = torch.cat([captured[label][0] for label in labels])
        pred = step.branch_denoised(guided)
        degraded, degraded_input = sag.degraded_branch(step.x, pred, mass, captured[labels[0]][1], threshold, blur_sigma)
        return sag.sag_guidance(step.denoised, degraded, step.run_extra(guided, degraded_input), scale)

    hook = AttentionHook(frozenset(selected), branch, capture)
    return Built(Method(key, Schedule(start_percent, end_percent), (hook,)), post_cfg)
