"""The landed methods as Guidance for the demo sampler, built from the pack's core the way
nodes/sag.py, nodes/pag.py, nodes/sega.py and nodes/attend_excite.py build them for ComfyUI (no method math here)."""
import dataclasses
import math

import torch

from . import text as _text
from . import unet as _unet
from ._pack import core
from .host import Guidance

_layers = core("attention.layers")
_math = core("attention.math")
_router = core("attention.router")
_sag = core("guidance.sag")
_pag = core("guidance.pag")
_sega = core("guidance.sega")
_excite = core("guidance.attend_excite")
_schedule = core("guidance.schedule")
_levels = core("attention.unet_levels")


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


class _Measured(Exception):
    """Ends a measuring forward once the last map is captured."""


def attend_excite(model, indices, settings=None, downscale=4):
    """Attend-and-Excite as a pre-step latent update, composed as nodes/attend_excite.py does for
    ComfyUI: per image a grad-enabled conditional forward whose cross-attention probabilities at
    one UNet level (downscale 4: the demo's 8x8, as SD1's 16x16 at 512 px) are averaged over
    layers and heads, then guidance.attend_excite.excite_latent moves that image's x.

    indices: per image, the token positions to excite (<start> is 0); settings: ExciteSettings
    without indices (the reference's defaults scaled to the sampler's steps when None).
    The sampler takes its step from the moved x (Host.sample), exact as under the Attend-and-Excite sampler."""
    layers = set(_levels.cross_attention_levels(model.unet)[downscale])

    def evaluate(x, sigma, cond):
        captured = []

        def observe(probs, layer, options):
            if layer in layers:
                captured.append(probs)
                if len(captured) == len(layers):
                    raise _Measured  # the rest of the UNet cannot change the maps
        try:
            model.eps(x, sigma, cond, {_unet.CROSS_ATTENTION_KEY: observe})
        except _Measured:
            pass
        h = w = int(round(captured[0].shape[2] ** 0.5))
        return torch.cat(captured, dim=1).float().mean(dim=1)[0].reshape(h, w, -1)

    def pre_step(host, x, sigma, ctx):
        base = settings or reference_excite_settings(ctx.steps)
        if not base.runs_at(ctx.step):
            return x
        c_in = 1 / math.sqrt(sigma ** 2 + 1)
        cond = ctx.sampler_conds["positive"]
        out = []
        with torch.enable_grad():
            for i in range(x.shape[0]):
                s = dataclasses.replace(base, indices=tuple(indices[i]))
                xi, _, _ = _excite.excite_latent(x[i:i + 1], ctx.step, ctx.steps, c_in, s,
                                                 lambda xi: evaluate(xi, sigma, cond[i:i + 1]))
                out.append(xi)
        return torch.cat(out)

    return Guidance(pre_step=pre_step)


def reference_excite_settings(steps):
    """The reference's defaults (50 steps: excite steps 0-24, refinement at steps 0, 10, 20 to
    0.05, 0.5, 0.8) at the same fractions of `steps`."""
    at = lambda percent: _schedule.step_at(percent, "percent", steps)
    return _excite.ExciteSettings(indices=(), max_iter_to_alter=at(50),
                                  thresholds=((at(0), 0.05), (at(20), 0.5), (at(40), 0.8)))


def token_positions(prompt, words):
    """Token positions (<start> is 0) of the first occurrence of each word in prompt."""
    ids = _text.tokenize([prompt])[0].tolist()
    return tuple(ids.index(_text.VOCAB.index(w)) for w in words)
