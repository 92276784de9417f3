"""Attend-and-Excite (Chefer et al. 2023, "Attend-and-Excite: Attention-Based Semantic Guidance for
Text-to-Image Diffusion Models"): its parameters, as diffusers' StableDiffusionAttendAndExcitePipeline
names them. The prompt is the node's input in ComfyUI and the generation's prompt in the WebUI."""
import dataclasses
from dataclasses import dataclass

import torch

from ..guidance.attend_excite import ExciteSettings, excite_latent
from ..guidance.excite_inputs import parse_indices, parse_step, parse_thresholds, resolve
from .spec import MethodSpec, Param

SPEC = MethodSpec(
    "attend_excite", "Attend-and-Excite (AttnGuide)", "A&E", "AttnGuideAttendAndExcite", img2img=False, hires="skip",
    params=(
        Param("words", "text", "", "Words",
              tooltip="The subjects to excite, comma separated, e.g. 'cat, frog'. A word split into "
                      "several tokens is excited through its last token; the first occurrence counts."),
        Param("max_excite_steps", "text", "25", "Max excite steps",
              tooltip="The latent is updated before steps 0 .. this-1: a step count (reference 25) or"
                      " a percent of the sampler's steps ('50%'). No gradient work runs after it."),
        Param("thresholds", "text", "0: 0.05, 10: 0.5, 20: 0.8", "Refinement thresholds",
              tooltip="Iterative refinement: at these steps (or percents, '20%: 0.5') the latent is "
                      "updated until every subject's attention peak reaches the threshold (reference "
                      "'0: 0.05, 10: 0.5, 20: 0.8'). Empty = no refinement."),
        Param("scale_factor", "float", 20.0, "Scale factor", minimum=0.0, maximum=1000.0, step=0.5,
              tooltip="Step size of the latent update (reference 20)."),
        Param("scale_range_start", "float", 1.0, "Scale range start", minimum=0.0, maximum=10.0, step=0.05,
              tooltip="Step size = scale_factor * sqrt(r), r going linearly from this at the first "
                      "step..."),
        Param("scale_range_end", "float", 0.5, "Scale range end", minimum=0.0, maximum=10.0, step=0.05,
              tooltip="...to this at the last step (reference range 1.0 to 0.5)."),
        Param("max_refinement_iterations", "int", 20, "Max refinement iterations", minimum=1, maximum=200,
              tooltip="Most updates of one iterative refinement (reference 20)."),
        Param("smoothing_sigma", "float", 0.5, "Smoothing sigma", minimum=0.05, maximum=10.0, step=0.05,
              tooltip="Sigma of the 3x3 Gaussian that smooths each map before its peak is taken "
                      "(reference 0.5; the reference's formula makes the effective std "
                      "sigma*sqrt(2))."),
        Param("attention_downscale", "int", 4, "Attention downscale", minimum=1, maximum=64,
              tooltip="Cross-attention maps of the UNet level where the latent is downscaled this "
                      "many times. 4 = the reference's 16x16 for SD1.x at 512 px; for SDXL 4 is the "
                      "32x32 level at 1024 px with the deep (10-block) transformers, which carry the "
                      "subjects."),
        Param("token_indices", "text", "", "Token indices", optional=True,
              tooltip="Advanced: token positions to excite instead of words, e.g. '2, 5' "
                      "(<|startoftext|> is 0). Overrides words when set."),
    ))

@dataclass(frozen=True)
class ExcitePlan:
    """What the hosts run: the settings of a run of `steps`, the cross-attention layers whose maps are
    averaged and their downscale."""
    base: ExciteSettings
    until: tuple
    thresholds: tuple
    layers: tuple
    downscale: int

    def settings(self, steps):
        return dataclasses.replace(self.base, max_iter_to_alter=resolve(self.until, steps),
                                   thresholds=tuple((resolve(s, steps), t) for s, t in self.thresholds))


def build(target, words, max_excite_steps, thresholds, scale_factor, scale_range_start, scale_range_end,
          max_refinement_iterations, smoothing_sigma, attention_downscale, token_indices="", word_indices=None):
    """The ExcitePlan of these params on `target` (its cross-attention levels, attention.unet_levels).
    word_indices(words) -> the token positions of the words in the host's prompt; unused when
    token_indices is given."""
    levels = target.levels
    if attention_downscale not in levels:
        text = "; ".join(f"{s}: {', '.join(map(str, ls))}" for s, ls in sorted(levels.items())) or "(none)"
        raise ValueError(f"attention_downscale {attention_downscale}: this model has no cross-attention there. "
                         f"Its cross-attention levels (downscale: layers) are {text}.")
    indices = parse_indices(token_indices) if token_indices and token_indices.strip() else word_indices(words)
    base = ExciteSettings(indices, 0, (), float(scale_factor), (float(scale_range_start), float(scale_range_end)),
                          int(max_refinement_iterations), float(smoothing_sigma))
    return ExcitePlan(base, parse_step(max_excite_steps, "max_excite_steps"), parse_thresholds(thresholds),
                      tuple(levels[attention_downscale]), attention_downscale)


# What every host installs, for hosts that call post-CFG functions with ComfyUI's arguments (ComfyUI,
# Forge, reForge). The adapter gives what differs: run_extra(args, conds, x) -> predictions of an extra
# model call; timestep(args) -> the model's timestep at args["sigma"].


def excite_images(x, step, steps, c_in, settings, evaluate, gradients):
    """(x moved by Attend-and-Excite, every image on its own, [each image's token maps or None]).
    gradients: the adapter's context that lets gradients through the host's UNet."""
    out, maps = [], []
    with gradients:
        for item in range(x.shape[0]):
            xi = x[item:item + 1].detach().clone()
            xi, item_maps, _ = excite_latent(xi, step, steps, c_in, settings, lambda xi: evaluate(xi, item))
            out.append(xi)
            maps.append(item_maps)
        moved = torch.cat(out)
    return moved.to(x.dtype), maps
