"""Semantic Guidance (Brack et al. 2023, "SEGA: Instructing Text-to-Image Models using Semantic
Guidance"): its parameters, as diffusers' SemanticStableDiffusionPipeline names them (edit_*).
The concept params repeat once per concept (a node each in ComfyUI, a slot each in the WebUI)."""
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
