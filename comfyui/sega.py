"""Semantic Guidance (SEGA) nodes: concepts are stacked with AttnGuideSEGAConcept and applied to a
model (AttnGuideSEGA, for KSampler) or built into a guider (AttnGuideSEGAGuider, for
SamplerCustomAdvanced). Every concept row runs in the step's main UNet call with cond and uncond."""
from dataclasses import dataclass

from ..attention.router import Method, step_context
from ..guidance.schedule import step_at
from ..guidance.sega import Concept, sega_denoised
from . import common
from .router import add_sampler_conds, install

_TEXT_KEYS = ("cross_attn", "pooled_output", "model_conds", "uuid")

@dataclass(frozen=True)
class ConceptInput:
    """One concept as the user gave it; warmup/cooldown become steps once the run's length is known."""
    conditioning: list
    label: str
    reverse: bool
    scale: float
    warmup: float
    cooldown: float  # None = never
    unit: str
    threshold: float
    weight: float

    def at(self, steps):
        return Concept(scale=self.scale, reverse=self.reverse, warmup=step_at(self.warmup, self.unit, steps),
                       cooldown=step_at(self.cooldown, self.unit, steps), threshold=self.threshold, weight=self.weight)

def apply_sega(model, concepts, momentum_scale, momentum_beta):
    """A clone of `model` with SEGA installed for `concepts` (ConceptInput list)."""
    if not concepts:
        raise ValueError("SEGA: no concepts. Connect an 'SEGA Concept (AttnGuide)' node to 'concepts'.")
    m = model.clone()
    key = common.method_key(m, "sega")
    names = [f"{key}.concept{i}" for i in range(len(concepts))]
    uncond_role = f"{key}.uncond"

    def make_conds(conds):
        positive = conds.get("positive") or []
        base = {k: v for k, v in positive[0].items() if k not in _TEXT_KEYS} if positive else {}
        width = positive[0]["cross_attn"].shape[-1] if positive and "cross_attn" in positive[0] else None
        out = {}
        for name, c in zip(names, concepts):
            for tensor, _ in c.conditioning:
                if width is not None and tensor.shape[-1] != width:
                    raise ValueError(f"SEGA concept {c.label!r} was encoded to {tensor.shape[-1]} channels but the "
                                     f"prompt has {width}: encode concepts with the same CLIP as the prompt "
                                     "(the checkpoint's).")
            # the prompt's ControlNet, areas, masks and sizes apply to the concept rows as well
            out[name] = [[tensor, {**base, **extras}] for tensor, extras in c.conditioning]
        return out

    def extra_rows(ctx, conds):
        rows = [(name, ctx.sampler_conds.get(name)) for name in names]
        if conds[1] is None:  # CFG 1: the host skips the uncond rows, SEGA still needs them
            rows.append((uncond_role, ctx.sampler_conds.get("negative")))
        return [(role, c) for role, c in rows if c is not None]

    def post_cfg(args):
        ctx = step_context(args["model_options"])
        if ctx is None or key not in ctx.active:
            return args["denoised"]
        predicted = [ctx.extra_outputs.get(name) for name in names]
        uncond = args["uncond_denoised"] if args["uncond"] is not None else ctx.extra_outputs.get(uncond_role)
        if uncond is None or any(p is None for p in predicted):
            common.warn_once(ctx, "SEGA: this sampler's guider has no negative prompt or did not evaluate the "
                                  "concepts; SEGA does nothing here. Use KSampler, CFGGuider or AttnGuideSEGAGuider.")
            return args["denoised"]
        state = ctx.run.setdefault(key, {}) if ctx.run is not None else {}
        out, state["momentum"] = sega_denoised(args["input"], args["sigma"], args["denoised"], uncond, predicted,
                                               [c.at(ctx.steps) for c in concepts], ctx.step, state.get("momentum"),
                                               momentum_scale, momentum_beta)
        return out

    install(m, Method(key, extra_rows=extra_rows))
    add_sampler_conds(m, key, make_conds)
    m.set_model_sampler_post_cfg_function(post_cfg)
    return m
