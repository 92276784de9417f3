"""The landed methods as Guidance for the demo sampler: SAG, PAG and SEGA from their methods/ builds
(as every host builds them), Attend-and-Excite composed as nodes/attend_excite.py composes it."""
import dataclasses
import logging
import math

import torch

from . import text as _text
from . import unet as _unet
from ._pack import core
from .host import Guidance

_layers = core("attention.layers")
_router = core("attention.router")
_sag = core("methods.sag")
_pag = core("methods.pag")
_sega = core("methods.sega")
_build = core("methods.build")
_args_step = core("methods.args_step")
_excite = core("guidance.attend_excite")
_schedule = core("guidance.schedule")
_levels = core("attention.unet_levels")
_LOG = logging.getLogger("attnguide.demo")


def _guidance(built):
    """A method's Built (methods/build.py) as the demo sampler's Guidance: its post-CFG sees the
    sampler's args through the Step ComfyUI-shaped hosts use."""
    def post_cfg(args):
        return built.post_cfg(_args_step.ArgsStep(args, args["ctx"], _run_extra, _timestep, _warn))
    return Guidance(built.method, post_cfg)


def _run_extra(args, conds, x):
    return args["host"].extra(x, args["sigma"], conds, args["ctx"])


def _timestep(args):
    return torch.tensor([args["timestep"]])


def _warn(ctx, message):
    _router.warn_once(ctx, message, _LOG)


def _target(model, key):
    return _build.Target(key, "unet", tuple(_layers.unet_layers(model.unet)))


def sag(model, scale=0.75, blur_sigma=1.0, threshold=1.0, layer="m0.0", key="sag"):
    return _guidance(_sag.build(_target(model, key), scale, blur_sigma, threshold, layer, 0.0, 1.0))


def pag(model, scale=3.0, layers="m0", adaptive_scale=0.0, key="pag"):
    return _guidance(_pag.build(_target(model, key), scale, adaptive_scale, layers, 0.0, 0.0, 1.0))


def sega(concept_conds, concepts, momentum_scale=0.1, momentum_beta=0.4, key="sega"):
    """concept_conds: one text context per concept (batch as the prompt); concepts: Concept(...).
    Needs CFG > 1 (the edit is measured from the uncond rows)."""
    return _guidance(_sega.build(_build.Target(key), concepts, momentum_scale, momentum_beta,
                                 concept_rows=lambda ctx, i: concept_conds[i]))


def Concept(scale=5.0, reverse=False, warmup=10, cooldown=None, threshold=0.9, weight=1.0):
    """A SEGA concept with warmup/cooldown in steps (the reference's edit_* arguments)."""
    return _sega.SegaConcept("concept", reverse, scale, warmup, cooldown, "steps", threshold, weight)


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
