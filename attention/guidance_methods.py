"""SAG's router method and SAG's and PAG's post-CFG functions, for hosts that call post-CFG
functions with ComfyUI's arguments (ComfyUI, Forge, reForge). The adapter gives what differs:
run_extra(args, conds, x) -> predictions of an extra model call; timestep(args) -> the model's
timestep at args["sigma"]."""
from ..guidance import sag
from ..guidance.pag import pag_guidance, pag_scale
from ..guidance.rescale import rescale_denoised
from .math import attention_with_key_mass
from .router import COND, UNCOND, AttentionHook, Method, step_context


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
