"""Semantic Guidance (Brack et al. 2023, "SEGA: Instructing Text-to-Image Models using Semantic
Guidance"): its parameters, as diffusers' SemanticStableDiffusionPipeline names them (edit_*).
The concept params repeat once per concept (a node each in ComfyUI, a slot each in the WebUI)."""
from dataclasses import dataclass

from ..attention.router import Method
from ..guidance.sega import sega_denoised, timed_concept
from .build import Built
from .spec import MethodSpec, Param

SPEC = MethodSpec(
    "sega", "Semantic Guidance (AttnGuide)", "SEGA", "AttnGuideSEGA", img2img=True, hires="apply",
    concept_slots=3, concept_params=(
        Param("prompt", "text", "", "Concept", multiline=True,
              tooltip="The concept, e.g. 'sunglasses'. Encoded with the CLIP input; leave empty when "
                      "you connect your own 'conditioning'.",
              webui_tooltip="A concept to add to or remove from the image, e.g. 'wearing sunglasses'."
                            " Empty = slot unused."),
        Param("direction", "choice", "add", "Direction", choices=("add", "remove"),
              tooltip="add: push the image towards the concept; remove: push it away (diffusers' "
                      "reverse_editing_direction)."),
        Param("scale", "float", 5.0, "Scale", minimum=0.0, maximum=100.0, step=0.1,
              tooltip="Edit guidance scale (diffusers' edit_guidance_scale, default 5)."),
        Param("warmup", "float", 10, "Warmup", minimum=0, maximum=10000, step=1,
              tooltip="Steps (or percent of the steps, see 'timing') before the edit is applied "
                      "(edit_warmup_steps, default 10 of the reference's 50: at 20-30 steps try "
                      "'percent' and 20). The momentum builds during warmup."),
        Param("cooldown", "float", -1, "Cooldown", minimum=-1, maximum=10000, step=1,
              tooltip="Step (or percent) from which the concept is off (edit_cooldown_steps). -1 = "
                      "never."),
        Param("timing", "choice", "steps", "Timing", choices=("steps", "percent"),
              tooltip="Unit of warmup and cooldown: sampler steps, or percent of the steps the "
                      "sampler runs (img2img counts from its first step)."),
        Param("threshold", "float", 0.9, "Threshold", minimum=0.0, maximum=0.99, step=0.01,
              tooltip="Keep only the strongest (1 - threshold) of the edit per channel "
                      "(edit_threshold, default 0.9 = top 10%). In [0, 1)."),
        Param("weight", "float", 1.0, "Weight", minimum=0.0, maximum=100.0, step=0.01,
              tooltip="Relative weight of this concept among the concepts (edit_weights)."),
    ),
    params=(
        Param("momentum_scale", "float", 0.1, "Momentum scale", minimum=0.0, maximum=10.0, step=0.01,
              tooltip="Weight of the edit momentum added every step (edit_momentum_scale, default "
                      "0.1)."),
        Param("momentum_beta", "float", 0.4, "Momentum beta", minimum=0.0, maximum=0.999, step=0.01,
              tooltip="How much momentum carries over between steps (edit_mom_beta, default 0.4)."),
    ))


@dataclass(frozen=True)
class SegaConcept:
    """One concept as the user gave it (the concept params); warmup/cooldown become steps once the
    run's length is known. cooldown None = never."""
    label: str
    reverse: bool
    scale: float
    warmup: float
    cooldown: float
    unit: str
    threshold: float
    weight: float

    def at(self, steps):
        return timed_concept(steps, self.scale, self.reverse, self.warmup, self.cooldown, self.unit, self.threshold,
                             self.weight)


def concept(index, prompt, direction, scale, warmup, cooldown, timing, threshold, weight):
    """A SegaConcept from the concept params (cooldown < 0 = never), checked with the core's messages."""
    label = prompt.strip() or f"concept {index + 1}"
    if direction not in ("add", "remove"):
        raise ValueError(f"SEGA concept {label!r}: direction must be 'add' or 'remove', not {direction!r}")
    c = SegaConcept(label, direction == "remove", scale, warmup, None if cooldown < 0 else cooldown, timing,
                    threshold, weight)
    c.at(100)  # validates threshold, weight, warmup, cooldown, timing
    return c


def build(target, concepts, momentum_scale, momentum_beta, concept_rows, uncond_rows=None):
    """SEGA's concept rows in the main model call and the edit after CFG (methods/build.py).
    concepts: SegaConcepts. The host gives concept_rows(ctx, i) -> its conds of concept i's rows and,
    where it runs no uncond rows at CFG 1, uncond_rows(ctx) -> the negative prompt's (the edit is
    measured from it)."""
    if not concepts:
        raise ValueError("SEGA: no concepts. Add at least one concept to add or remove (a 'SEGA Concept "
                         "(AttnGuide)' node in ComfyUI, a concept prompt in the WebUI).")
    key = target.key
    names = [f"{key}.concept{i}" for i in range(len(concepts))]
    uncond_role = f"{key}.uncond"

    def extra_rows(ctx, conds):
        rows = [(name, concept_rows(ctx, i)) for i, name in enumerate(names)]
        if conds[1] is None and uncond_rows is not None:
            rows.append((uncond_role, uncond_rows(ctx)))
        return [(role, c) for role, c in rows if c is not None]

    def post_cfg(step):
        if key not in step.ctx.active:
            return step.denoised
        predicted = [step.rows(name) for name in names]
        uncond = step.uncond_denoised if step.uncond_denoised is not None else step.rows(uncond_role)
        if uncond is None or any(p is None for p in predicted):
            step.warn("SEGA: the concepts or the negative prompt were not evaluated in this step (a guider without "
                      "a negative prompt, or another extension replaced the model call); SEGA does nothing here. "
                      "Use KSampler, CFGGuider or AttnGuideSEGAGuider in ComfyUI.")
            return step.denoised
        state = step.run_state(key)
        out, state["momentum"] = sega_denoised(step.x, step.sigma, step.denoised, uncond, predicted,
                                               [c.at(step.ctx.steps) for c in concepts], step.ctx.step,
                                               state.get("momentum"), momentum_scale, momentum_beta)
        return out

    return Built(Method(key, extra_rows=extra_rows), post_cfg)
