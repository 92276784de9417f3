"""Each method's WebUI controls: the ComfyUI node's inputs under the same names, with the
same defaults, ranges and tooltips (tests/webui/test_webui_params.py checks them against
the node schemas), plus how they travel: the Script's argument order (= the web API's
`alwayson_scripts` "args"), the infotext keys, the X/Y/Z plot axes.

Argument order of every method: [enabled, *its params in table order]; SEGA repeats
its concept params once per concept slot before the method params.

params handed to the backends are keyed exactly like the node's execute() kwargs, with
these WebUI-side additions:
  sega:          "concepts" = [{prompt, direction, scale, warmup, cooldown, timing,
                 threshold, weight}, ...] (slots with an empty prompt left out; prompt
                 is text, the backend encodes it with the generation's text encoder)
  attend_excite: "prompt" = the generation's positive prompt text (p.prompt)
"""
from dataclasses import dataclass

KINDS = ("float", "int", "text", "choice")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    default: object
    label: str
    tooltip: str
    minimum: float = None
    maximum: float = None
    step: float = None
    choices: tuple = ()

    @property
    def numeric(self):
        return self.kind in ("float", "int")

    def parse(self, value):
        """A value from the UI, the API, a pasted infotext or an X/Y/Z axis, as the node would get it."""
        if self.kind == "float":
            return float(value)
        if self.kind == "int":
            return int(round(float(value)))
        if self.kind == "choice":
            value = str(value)
            if value not in self.choices:
                raise ValueError(f"{self.label}: '{value}' is not one of {', '.join(self.choices)}")
            return value
        return "" if value is None else str(value)


@dataclass(frozen=True)
class MethodSpec:
    key: str             # the backends' method name
    title: str           # Script.title(): accordion label and the API's alwayson_scripts key
    short: str           # infotext / X/Y/Z prefix
    node_id: str         # the ComfyUI node whose execute() kwargs the params are
    params: tuple
    img2img: bool
    hires: str           # "apply": the hires-fix pass runs the method with the same settings; "skip"
    concept_params: tuple = ()   # SEGA: per concept slot (node AttnGuideSEGAConcept)
    concept_slots: int = 0

    def controls(self):
        """(slot, Param) for every control after `enabled`, in argument order; slot None = method param."""
        out = [(slot, p) for slot in range(self.concept_slots) for p in self.concept_params]
        return out + [(None, p) for p in self.params]

    def infotext_key(self, slot, param):
        where = f" {slot + 1}" if slot is not None else ""
        return f"AttnGuide {self.short}{where} {param.name}"

    def read(self, args, overrides=None):
        """(enabled, params) from the Script's args; overrides {(slot, name): value} (X/Y/Z) win
        and turn the method on."""
        controls = self.controls()
        if len(args) != len(controls) + 1:
            raise ValueError(f"{self.title}: expected {len(controls) + 1} script args "
                             f"(enabled, {', '.join(p.name for _, p in controls)}), got {len(args)}")
        overrides = overrides or {}
        enabled = bool(args[0]) or bool(overrides)
        values = {}
        for (slot, param), value in zip(controls, args[1:]):
            values[(slot, param.name)] = param.parse(overrides.get((slot, param.name), value))
        params = {p.name: values[(None, p.name)] for p in self.params}
        if self.concept_slots:
            params["concepts"] = [
                {p.name: values[(slot, p.name)] for p in self.concept_params}
                for slot in range(self.concept_slots) if values[(slot, "prompt")].strip()]
        return enabled, params

    def infotext(self, params):
        """extra_generation_params entries for params as read()."""
        out = {self.infotext_key(None, p): params[p.name] for p in self.params}
        for slot, concept in enumerate(params.get("concepts", ())):
            out.update({self.infotext_key(slot, p): concept[p.name] for p in self.concept_params})
        return out


_START = Param("start_percent", "float", 0.0, "Start at", minimum=0.0, maximum=1.0, step=0.01,
               tooltip="First step the method is on, as a fraction of the steps the sampler runs (0 = first step).")
_END = Param("end_percent", "float", 1.0, "End at", minimum=0.0, maximum=1.0, step=0.01,
             tooltip="The method is off from this fraction of the steps on (1 = on until the end). "
                     "Outside the window it costs nothing.")

SAG = MethodSpec("sag", "Self-Attention Guidance (AttnGuide)", "SAG", "AttnGuideSAG", img2img=True, hires="apply", params=(
    Param("scale", "float", 0.75, "Scale", minimum=-10.0, maximum=10.0, step=0.01,
          tooltip="SAG scale. 0.75 is the diffusers default; ComfyUI's built-in node uses 0.5."),
    Param("blur_sigma", "float", 1.0, "Blur sigma", minimum=0.0, maximum=10.0, step=0.1,
          tooltip="Sigma of the 9x9 Gaussian blur of the masked regions. 1.0 is the diffusers default; "
                  "ComfyUI's built-in node uses 2.0."),
    Param("threshold", "float", 1.0, "Mask threshold", minimum=0.0, maximum=10.0, step=0.01,
          tooltip="Blur where a position receives more than this total attention (head-averaged, summed over "
                  "queries; the mean is exactly 1). 1.0 in diffusers and ComfyUI."),
    Param("layer", "text", "m0.0", "Layer",
          tooltip="Self-attention layer whose map picks the regions to blur: d/m/u + block.depth (the UNet's "
                  "input/middle/output block ids). Default m0.0, the first transformer of the middle block, as in diffusers."),
    _START, _END))

PAG = MethodSpec("pag", "Perturbed-Attention Guidance (AttnGuide)", "PAG", "AttnGuidePAG", img2img=True, hires="apply", params=(
    Param("scale", "float", 3.0, "Scale", minimum=0.0, maximum=100.0, step=0.01,
          tooltip="PAG scale (diffusers and ComfyUI default 3.0). 0 turns it off."),
    Param("adaptive_scale", "float", 0.0, "Adaptive scale", minimum=0.0, maximum=1.0, step=0.0001,
          tooltip="Lower the scale as sampling proceeds: scale - adaptive_scale * (1000 - timestep), never below 0 "
                  "(diffusers' pag_adaptive_scale). 0 keeps it constant."),
    Param("layers", "text", "m0", "Layers",
          tooltip="Self-attention layers to perturb: d/m/u + block[.depth], ranges with '-', comma separated. "
                  "Default m0: every transformer of the middle block, as diffusers' 'mid'."),
    Param("rescale", "float", 0.0, "Rescale", minimum=0.0, maximum=1.0, step=0.01,
          tooltip="Guidance rescale (diffusers' guidance_rescale) applied to the CFG+PAG result against the "
                  "conditional prediction; only with CFG > 1. 0 = off."),
    _START, _END))

SEGA = MethodSpec(
    "sega", "Semantic Guidance (AttnGuide)", "SEGA", "AttnGuideSEGA", img2img=True, hires="apply", concept_slots=3,
    concept_params=(
        Param("prompt", "text", "", "Concept",
              tooltip="A concept to add to or remove from the image, e.g. 'wearing sunglasses'. Empty = slot unused."),
        Param("direction", "choice", "add", "Direction", choices=("add", "remove"),
              tooltip="add: steer toward the concept; remove: steer away from it."),
        Param("scale", "float", 5.0, "Scale", minimum=0.0, maximum=100.0, step=0.1,
              tooltip="Edit guidance scale of this concept (reference 5)."),
        Param("warmup", "float", 10, "Warmup", minimum=0, maximum=10000, step=1,
              tooltip="The concept starts after this many steps (or percent of the steps, see timing)."),
        Param("cooldown", "float", -1, "Cooldown", minimum=-1, maximum=10000, step=1,
              tooltip="The concept stops at this step (or percent); -1 = never."),
        Param("timing", "choice", "steps", "Timing", choices=("steps", "percent"),
              tooltip="Whether warmup and cooldown count steps or percent of the steps the sampler runs."),
        Param("threshold", "float", 0.9, "Threshold", minimum=0.0, maximum=0.99, step=0.01,
              tooltip="Only the latent positions above this quantile of the concept's guidance are edited (reference 0.9)."),
        Param("weight", "float", 1.0, "Weight", minimum=0.0, maximum=100.0, step=0.1,
              tooltip="Relative weight of this concept while the concepts warm up (reference 1)."),
    ),
    params=(
        Param("momentum_scale", "float", 0.1, "Momentum scale", minimum=0.0, maximum=10.0, step=0.01,
              tooltip="Weight of the running average of the edit added to every step (reference 0.1)."),
        Param("momentum_beta", "float", 0.4, "Momentum beta", minimum=0.0, maximum=0.999, step=0.01,
              tooltip="How fast the momentum forgets (reference 0.4)."),
    ))

ATTEND_EXCITE = MethodSpec(
    "attend_excite", "Attend-and-Excite (AttnGuide)", "A&E", "AttnGuideAttendAndExcite", img2img=False, hires="skip", params=(
        Param("words", "text", "", "Words",
              tooltip="Subjects of the prompt to excite, comma separated, e.g. 'cat, frog'. A word split into several "
                      "tokens is excited through its last token; the first occurrence counts."),
        Param("max_excite_steps", "text", "25", "Max excite steps",
              tooltip="The latent is updated before steps 0 .. this-1: a step count (reference 25) or a percent of the "
                      "sampler's steps ('50%')."),
        Param("thresholds", "text", "0: 0.05, 10: 0.5, 20: 0.8", "Refinement thresholds",
              tooltip="At these steps (or percents, '20%: 0.5') the latent is updated until every subject's attention "
                      "peak reaches the threshold. Empty = no refinement."),
        Param("scale_factor", "float", 20.0, "Scale factor", minimum=0.0, maximum=1000.0, step=0.5,
              tooltip="Step size of the latent update (reference 20)."),
        Param("scale_range_start", "float", 1.0, "Scale range start", minimum=0.0, maximum=10.0, step=0.05,
              tooltip="Step size = scale_factor * sqrt(r), r going linearly from this at the first step..."),
        Param("scale_range_end", "float", 0.5, "Scale range end", minimum=0.0, maximum=10.0, step=0.05,
              tooltip="...to this at the last step (reference range 1.0 to 0.5)."),
        Param("max_refinement_iterations", "int", 20, "Max refinement iterations", minimum=1, maximum=200, step=1,
              tooltip="Most updates of one iterative refinement (reference 20)."),
        Param("smoothing_sigma", "float", 0.5, "Smoothing sigma", minimum=0.05, maximum=10.0, step=0.05,
              tooltip="Sigma of the 3x3 Gaussian that smooths each map before its peak is taken (reference 0.5)."),
        Param("attention_downscale", "int", 4, "Attention downscale", minimum=1, maximum=64, step=1,
              tooltip="Cross-attention maps of the UNet level where the latent is downscaled this many times "
                      "(4 = 16x16 for SD1.x at 512 px; the 32x32 level for SDXL at 1024 px)."),
        Param("token_indices", "text", "", "Token indices",
              tooltip="Advanced: token positions to excite instead of words, e.g. '2, 5' (<|startoftext|> is 0). "
                      "Overrides words when set."),
    ))

PANORAMA = MethodSpec(
    "panorama", "MultiDiffusion Panorama (AttnGuide)", "Panorama", "AttnGuidePanorama", img2img=True, hires="apply",
    params=(
        Param("window_width", "int", 0, "Window width", minimum=0, maximum=16384, step=8,
              tooltip="Width of a window in pixels; 0 = the model's native size (512 SD1/SD2, 1024 SDXL)."),
        Param("window_height", "int", 0, "Window height", minimum=0, maximum=16384, step=8,
              tooltip="Height of a window in pixels; 0 = the model's native size."),
        Param("stride", "int", 64, "Stride", minimum=8, maximum=16384, step=8,
              tooltip="Pixels between neighbouring windows (reference 64); the last window ends at the border."),
        Param("wrap", "choice", "none", "Wrap around", choices=("none", "horizontal", "vertical", "both"),
              tooltip="Let windows wrap across these borders, for 360-degree panoramas."),
        Param("weights", "choice", "uniform", "Window weights", choices=("uniform", "feathered"),
              tooltip="How overlapping windows are averaged: uniform (the paper) or feathered toward window edges."),
        Param("window_batch", "int", 4, "Window batch", minimum=1, maximum=256, step=1,
              tooltip="Windows per UNet call: more is faster and needs more memory; the result is the same."),
    ))

PIX2PIX_ZERO = MethodSpec(
    # img2img only (scripts/attnguide_pix2pix_zero.py hides it in txt2img); the caption is the img2img prompt.
    # The params are the inputs of three nodes: Direction (source, target), Edit (guidance_amount), Invert (the rest).
    "pix2pix_zero", "Pix2Pix-Zero (AttnGuide)", "P2PZ", "AttnGuidePix2PixZeroEdit", img2img=True, hires="skip", params=(
        Param("source", "text", "cat", "Source",
              tooltip="What the image shows now: sentences about it, one per line (e.g. 'a cat sitting on a sofa.'), "
                      "or one word ('cat'), expanded with 16 built-in sentence templates. The img2img prompt is the "
                      "image's caption; the edit adds target - source to it."),
        Param("target", "text", "dog", "Target",
              tooltip="What it should show: the same kind of sentences with the new concept ('dog')."),
        Param("guidance_amount", "float", 0.1, "Guidance amount", minimum=0.0, maximum=1000.0, step=0.01,
              tooltip="Cross-attention guidance: step size of the one gradient step per denoising step that pulls the "
                      "edit's cross-attention maps towards the source's (reference 0.1). 0 = the direction alone."),
        Param("lambda_auto_corr", "float", 20.0, "Inversion lambda auto-correlation", minimum=0.0, maximum=1000.0, step=0.5,
              tooltip="Weight of the auto-correlation penalty that keeps the inverted noise spatially uncorrelated "
                      "(reference 20; 0 = off)."),
        Param("lambda_kl", "float", 20.0, "Inversion lambda KL", minimum=0.0, maximum=1000.0, step=0.5,
              tooltip="Weight of the KL penalty that keeps the noise's mean 0 and variance 1 (reference 20; 0 = off)."),
        Param("regularization_steps", "int", 5, "Inversion regularisation steps", minimum=0, maximum=100, step=1,
              tooltip="Regularisation rounds per inversion step (reference 5; 0 = plain DDIM inversion)."),
        Param("auto_corr_rolls", "int", 5, "Inversion auto-correlation rolls", minimum=1, maximum=100, step=1,
              tooltip="Random shifts per round of the auto-correlation penalty (reference 5)."),
        Param("seed", "int", 0, "Inversion seed", minimum=0, maximum=0xffffffffffffffff, step=1,
              tooltip="Seed of the random shifts of the auto-correlation penalty (image i uses seed + i)."),
    ))

METHODS = {m.key: m for m in (SAG, PAG, SEGA, ATTEND_EXCITE, PANORAMA, PIX2PIX_ZERO)}
