"""Self-Attention Guidance (Hong et al. 2023, "Improving Sample Quality of Diffusion Models Using
Self-Attention Guidance"): its parameters, as diffusers' StableDiffusionSAGPipeline names them."""
from ..attention.dit_blocks import BLOCK_KEY
from ..attention.math import attention_with_key_mass, self_attention_key_mass
from ..attention.router import COND, UNCOND, AttentionHook, Method, step_context
from ..guidance import sag
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

# What every host installs, for hosts that call post-CFG functions with ComfyUI's arguments (ComfyUI,
# Forge, reForge). The adapter gives what differs: run_extra(args, conds, x) -> predictions of an extra
# model call; timestep(args) -> the model's timestep at args["sigma"].


def auto_layer(family, layers):
    """What layer 'auto' stands for on a model of `family` with these layers."""
    if family == "unet":
        return "m0.0"
    joint = [layer for layer in layers if layer.kind == "joint"]
    return str(joint[len(joint) // 2])


def sag_layer(selected, layer):
    """The one layer SAG reads, of those `layer` (the input's text) selects."""
    if len(selected) != 1:
        raise ValueError(f"layer: SAG reads one layer, '{layer}' selects {len(selected)} "
                         f"({', '.join(map(str, selected))}). Name one, e.g. '{selected[0]}'.")
    return selected[0]


def sag_method(key, layer, schedule, scale, blur_sigma, threshold, run_extra):
    """(Method, post-CFG function) of Self-Attention Guidance reading `layer`."""
    branch = lambda ctx: {UNCOND} if ctx.cfg > 1 else {COND}

    def capture(q, k, v, heads, ctx, options, next):
        block = options.get(BLOCK_KEY)
        if block is not None:  # a DiT's joint attention: the image tokens' attention among themselves
            t, n = block.text_tokens, block.grid[0] * block.grid[1]
            ctx.captures[key] = (self_attention_key_mass(q[:, t:t + n], k[:, t:t + n], heads), block.grid)
            return next(q, k, v)
        out, mass = attention_with_key_mass(q, k, v, heads)
        shape = options.get("activations_shape")  # ComfyUI gives it; Forge does not (the latent's size is used)
        ctx.captures[key] = (mass, tuple(shape[-2:]) if shape is not None else None)
        return out

    def post_cfg(args):
        ctx = step_context(args["model_options"])
        if ctx is None or key not in ctx.active or key not in ctx.captures:
            return args["denoised"]
        use_uncond = ctx.cfg > 1 and args["uncond"] is not None
        pred = args["uncond_denoised"] if use_uncond else args["cond_denoised"]
        mass, grid = ctx.captures[key]
        degraded, degraded_input = sag.degraded_branch(args["input"], pred, mass, grid, threshold, blur_sigma)
        (degraded_pred,) = run_extra(args, [args["uncond"] if use_uncond else args["cond"]], degraded_input)
        return sag.sag_guidance(args["denoised"], degraded, degraded_pred, scale)

    return Method(key, schedule, (AttentionHook(frozenset([layer]), branch, capture),)), post_cfg
