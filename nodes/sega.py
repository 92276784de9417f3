"""Semantic Guidance (SEGA) nodes: concepts are stacked with AttnGuideSEGAConcept and applied to a
model (AttnGuideSEGA, for KSampler) or built into a guider (AttnGuideSEGAGuider, for
SamplerCustomAdvanced). Every concept row runs in the step's main UNet call with cond and uncond."""
from dataclasses import dataclass

import comfy.samplers

from ..attention.router import Method, step_context
from ..guidance.schedule import step_at
from ..guidance.sega import Concept, sega_denoised
from . import common
from .comfy_api_compat import io, node_schema
from .router_comfy import add_sampler_conds, install

Concepts = io.Custom("ATTNGUIDE_SEGA_CONCEPTS")
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


class SEGAConcept(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuideSEGAConcept",
            search_aliases=["SEGA", "semantic guidance", "concept", "edit concept"],
            display_name="SEGA Concept (AttnGuide)",
            category=common.CATEGORY,
            description="One concept for Semantic Guidance: a prompt to add to or remove from the image. "
                        "Chain several through 'concepts'.",
            inputs=[
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="The concept, e.g. 'sunglasses'. Encoded with the CLIP input; leave empty "
                                        "when you connect your own 'conditioning'."),
                io.Combo.Input("direction", options=["add", "remove"], default="add",
                               tooltip="add: push the image towards the concept; remove: push it away "
                                       "(diffusers' reverse_editing_direction)."),
                io.Float.Input("scale", default=5.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Edit guidance scale (diffusers' edit_guidance_scale, default 5)."),
                io.Float.Input("warmup", default=10, min=0, max=10000, step=1,
                               tooltip="Steps (or percent of the steps, see 'timing') before the edit is applied "
                                       "(edit_warmup_steps, default 10 of the reference's 50: at 20-30 steps try "
                                       "'percent' and 20). The momentum builds during warmup."),
                io.Float.Input("cooldown", default=-1, min=-1, max=10000, step=1,
                               tooltip="Step (or percent) from which the concept is off (edit_cooldown_steps). "
                                       "-1 = never."),
                io.Combo.Input("timing", options=["steps", "percent"], default="steps",
                               tooltip="Unit of warmup and cooldown: sampler steps, or percent of the steps the "
                                       "sampler runs (img2img counts from its first step)."),
                io.Float.Input("threshold", default=0.9, min=0.0, max=0.99, step=0.01,
                               tooltip="Keep only the strongest (1 - threshold) of the edit per channel "
                                       "(edit_threshold, default 0.9 = top 10%). In [0, 1)."),
                io.Float.Input("weight", default=1.0, min=0.0, max=100.0, step=0.01,
                               tooltip="Relative weight of this concept among the concepts (edit_weights)."),
                io.Clip.Input("clip", optional=True, tooltip="The checkpoint's CLIP, to encode 'prompt'."),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="The concept already encoded (instead of clip + prompt), from the same "
                                              "text encoder as the prompt."),
                Concepts.Input("concepts", optional=True, tooltip="Concepts to chain this one after."),
            ],
            outputs=[Concepts.Output(display_name="concepts")],
        )

    @classmethod
    def execute(cls, prompt, direction, scale, warmup, cooldown, timing, threshold, weight, clip=None,
                conditioning=None, concepts=None) -> io.NodeOutput:
        previous = list(concepts or [])
        label = prompt.strip() or f"concept {len(previous) + 1}"
        if conditioning is None:
            if clip is None:
                raise ValueError(f"SEGA concept {label!r}: connect a CLIP (to encode 'prompt') or a 'conditioning'.")
            if not prompt.strip():
                raise ValueError(f"SEGA concept {len(previous) + 1}: 'prompt' is empty. Type the concept to add or "
                                 "remove (e.g. 'sunglasses'), or connect a 'conditioning'.")
            conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))
        if not conditioning:
            raise ValueError(f"SEGA concept {label!r}: the 'conditioning' input is empty.")
        concept = ConceptInput(conditioning, label, direction == "remove", scale, warmup,
                               None if cooldown < 0 else cooldown, timing, threshold, weight)
        concept.at(100)  # validates threshold, weight, warmup, cooldown with the core's messages
        return io.NodeOutput(previous + [concept])


def _momentum_inputs():
    return [
        io.Float.Input("momentum_scale", default=0.1, min=0.0, max=10.0, step=0.01,
                       tooltip="Weight of the edit momentum added every step (edit_momentum_scale, default 0.1)."),
        io.Float.Input("momentum_beta", default=0.4, min=0.0, max=0.999, step=0.01,
                       tooltip="How much momentum carries over between steps (edit_mom_beta, default 0.4)."),
    ]


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


class SemanticGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuideSEGA",
            search_aliases=["SEGA", "semantic guidance", "concept editing", "add or remove concept"],
            display_name="Semantic Guidance (AttnGuide)",
            category=common.CATEGORY,
            description="Semantic Guidance (Brack et al. 2023), equal to diffusers' SemanticStableDiffusionPipeline: "
                        "adds or removes the chained concepts. Use with KSampler (or any guider built on the model).",
            inputs=[io.Model.Input("model", tooltip="Any model ComfyUI samples with CFG."),
                    Concepts.Input("concepts", tooltip="From 'SEGA Concept (AttnGuide)' nodes."),
                    *_momentum_inputs()],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, concepts, momentum_scale, momentum_beta) -> io.NodeOutput:
        return io.NodeOutput(apply_sega(model, concepts, momentum_scale, momentum_beta))


class SEGAGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuideSEGAGuider",
            search_aliases=["SEGA", "semantic guidance", "guider", "SamplerCustomAdvanced"],
            display_name="SEGA Guider (AttnGuide)",
            category=common.CATEGORY,
            description="A CFG guider with Semantic Guidance, for SamplerCustomAdvanced.",
            inputs=[io.Model.Input("model", tooltip="Any model ComfyUI samples with CFG."),
                    io.Conditioning.Input("positive", tooltip="The prompt."),
                    io.Conditioning.Input("negative", tooltip="The negative prompt; SEGA's edits are measured "
                                                              "from it, as the reference measures them from ''."),
                    Concepts.Input("concepts", tooltip="From 'SEGA Concept (AttnGuide)' nodes."),
                    io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01,
                                   tooltip="Classifier-free guidance scale (the reference's guidance_scale)."),
                    *_momentum_inputs()],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def execute(cls, model, positive, negative, concepts, cfg, momentum_scale, momentum_beta) -> io.NodeOutput:
        guider = comfy.samplers.CFGGuider(apply_sega(model, concepts, momentum_scale, momentum_beta))
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        return io.NodeOutput(guider)
