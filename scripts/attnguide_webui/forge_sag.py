"""Self-Attention Guidance on a Forge/reForge patcher (the ComfyUI node's behaviour, nodes/sag.py)."""
from ...attention.math import attention_with_key_mass
from ...attention.router import COND, ROUTER_KEY, UNCOND, AttentionHook, Method, step_context
from ...guidance import sag
from ...guidance.schedule import Schedule
from .forge_params import layers_of, method_key
from .forge_router import install, run_extra


def apply_sag(patcher, scale, blur_sigma, threshold, layer, start_percent, end_percent, sigmas=None):
    selected = layers_of(patcher, layer, "layer", "Self-Attention Guidance")
    if len(selected) != 1:
        raise ValueError(f"layer: SAG reads one layer, '{layer}' selects {len(selected)} "
                         f"({', '.join(map(str, selected))}). Name one, e.g. '{selected[0]}'.")
    schedule = Schedule(start_percent, end_percent)
    router = patcher.model_options.get("transformer_options", {}).get(ROUTER_KEY)
    if router is not None and any(m.key.startswith("panorama.") for m in router.methods):
        raise ValueError("Self-Attention Guidance cannot run together with the panorama on Forge/reForge (it needs "
                         "one attention map per image; the panorama evaluates windows). Turn one of them off.")
    m = patcher.clone()
    if scale == 0:
        return m
    key = method_key(m, "sag")
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

    install(m, Method(key, schedule, (AttentionHook(frozenset(selected), branch, capture),)), sigmas)
    m.set_model_sampler_post_cfg_function(post_cfg)
    return m
