"""Semantic Guidance (SEGA) on a ComfyUI model: the concepts' conds join the sampler's own (the
prompt's areas, ControlNet and model conds apply to them), their rows the step's main model call;
methods/sega.py builds the rest."""
from dataclasses import dataclass

from ..methods.build import Target
from ..methods.sega import SegaConcept, build
from . import common
from .router import add_sampler_conds, install_built

_TEXT_KEYS = ("cross_attn", "pooled_output", "model_conds", "uuid")


@dataclass(frozen=True)
class ConceptInput:
    """One concept of a SEGA Concept node: its CONDITIONING and its settings."""
    conditioning: list
    concept: SegaConcept


def apply_sega(model, concepts, params):
    """A clone of `model` with SEGA installed for `concepts` (ConceptInput list); params: the method's."""
    m = model.clone()
    key = common.method_key(m, "sega")
    names = [f"{key}.concept{i}" for i in range(len(concepts))]
    built = build(Target(key), [c.concept for c in concepts], **params,
                  concept_rows=lambda ctx, i: ctx.sampler_conds.get(names[i]),
                  uncond_rows=lambda ctx: ctx.sampler_conds.get("negative"))

    def make_conds(conds):
        positive = conds.get("positive") or []
        base = {k: v for k, v in positive[0].items() if k not in _TEXT_KEYS} if positive else {}
        width = positive[0]["cross_attn"].shape[-1] if positive and "cross_attn" in positive[0] else None
        out = {}
        for name, c in zip(names, concepts):
            for tensor, _ in c.conditioning:
                if width is not None and tensor.shape[-1] != width:
                    raise ValueError(f"SEGA concept {c.concept.label!r} was encoded to {tensor.shape[-1]} channels "
                                     f"but the prompt has {width}: encode concepts with the same CLIP as the prompt "
                                     "(the checkpoint's).")
            # the prompt's ControlNet, areas, masks and sizes apply to the concept rows as well
            out[name] = [[tensor, {**base, **extras}] for tensor, extras in c.conditioning]
        return out

    install_built(m, built)
    add_sampler_conds(m, key, make_conds)
    return m
