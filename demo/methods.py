"""The landed methods as Guidance for the demo sampler, built from the pack's core the way
nodes/sag.py, nodes/pag.py and nodes/sega.py build them for ComfyUI (no method math here)."""
from ._pack import core
from .host import Guidance

_layers = core("attention.layers")
_math = core("attention.math")
_router = core("attention.router")
_sag = core("guidance.sag")
_pag = core("guidance.pag")
_sega = core("guidance.sega")


def select(model, text, name="layers"):
    return _layers.parse_layers(text, _layers.unet_layers(model.unet), name)


def sag(model, scale=0.75, blur_sigma=1.0, threshold=1.0, layer="m0.0", key="sag"):
    (where,) = select(model, layer, "layer")
    branch = lambda ctx: {_router.UNCOND} if ctx.cfg > 1 else {_router.COND}

    def capture(q, k, v, heads, ctx, options, next):
        out, mass = _math.attention_with_key_mass(q, k, v, heads)
        ctx.captures[key] = mass
        return out

    def post_cfg(args):
        ctx, x = args["ctx"], args["input"]
        use_uncond = ctx.cfg > 1 and args["uncond"] is not None
        pred = args["uncond_denoised"] if use_uncond else args["cond_denoised"]
        mass = ctx.captures[key]
        hw = tuple(x.shape[-2:])
        mask = _sag.attention_mask(mass, _sag.grid_shape(mass.shape[1], hw), hw, threshold)
        degraded = _sag.degrade(pred, mask.to(pred.dtype), blur_sigma)
        (degraded_pred,) = args["host"].extra(_sag.degraded_input(x, pred, degraded), args["sigma"],
                                              [args["uncond"] if use_uncond else args["cond"]], ctx)
        return _sag.sag_guidance(args["denoised"], degraded, degraded_pred, scale)

    hook = _router.AttentionHook(frozenset({where}), branch, capture)
    return Guidance(_router.Method(key, hooks=(hook,)), post_cfg)


def pag(model, scale=3.0, layers="m0", adaptive_scale=0.0, key="pag"):
    chosen = select(model, layers)

    def perturb(q, k, v, heads, ctx, options, next):
        return _math.identity_attention(q, k, v, heads)

    def post_cfg(args):
        perturbed = args["ctx"].extra_outputs[key]
        return _pag.pag_guidance(args["denoised"], args["cond_denoised"], perturbed,
                                 _pag.pag_scale(scale, adaptive_scale, args["timestep"]))

    hook = _router.AttentionHook(frozenset(chosen), lambda ctx: {key}, perturb)
    return Guidance(_router.Method(key, hooks=(hook,), extra_cond_rows=True), post_cfg)


def sega(concept_conds, concepts, momentum_scale=0.1, momentum_beta=0.4, key="sega"):
    """concept_conds: one text context per concept (batch as the prompt); concepts: guidance.sega.Concept.
    Needs CFG > 1 (the edit is measured from the uncond rows)."""
    roles = [f"{key}.{i}" for i in range(len(concepts))]
    run = {}

    def extra_rows(ctx, conds):
        return list(zip(roles, concept_conds))

    def post_cfg(args):
        ctx = args["ctx"]
        if ctx.step == 0:
            run.clear()  # a new generation: no momentum yet
        out, run["momentum"] = _sega.sega_denoised(args["input"], args["sigma"], args["denoised"],
                                                   args["uncond_denoised"], [ctx.extra_outputs[r] for r in roles],
                                                   concepts, ctx.step, run.get("momentum"),
                                                   momentum_scale, momentum_beta)
        return out

    return Guidance(_router.Method(key, extra_rows=extra_rows), post_cfg)


Concept = _sega.Concept
