"""Attend-and-Excite for ComfyUI.

A PREDICT_NOISE wrapper moves the latent before each model call of the refinement
window: per image, grad-enabled conditional forwards with the cross-attention of one
resolution captured (attn2 replace patches that exist only in that forward), then the
normal CFG call at the moved latent. A measuring forward stops at its last captured
layer. The sampler keeps its own x, so the wrapper returns the denoised prediction that
carries the move to the sampler's next state (guidance.latent_update.moved_latent_denoised):
exact for Euler and DDIM. For other samplers nodes/excite_sampler.py moves the sampler's x.
"""
import dataclasses

import comfy.patcher_extension
import comfy.samplers
import torch

from ..attention.excite_forward import excite_images, map_evaluator
from ..attention.unet_levels import cross_attention_levels, grid
from ..guidance.attend_excite import ExciteSettings
from ..guidance.latent_update import moved_latent_denoised
from ..guidance.schedule import step_index
from . import common
from .comfy_api_compat import io, node_schema
from ..guidance.excite_inputs import parse_step, parse_thresholds, resolve
from .grad_forward import gradients_through
from .prompt_tokens import parse_indices, word_indices

RECORD_KEY = "attnguide_excite"
SAMPLER_OWNS_X = "attnguide_excite_sampler"
NAME = "Attend-and-Excite (AttnGuide)"


class Exciter:
    """One node's Attend-and-Excite: moves a batch's latent before a step, and keeps the
    excited tokens' maps of the last step it ran (per image) for the maps node.

    The PREDICT_NOISE wrapper moves x and hands the move to the sampler through the
    denoised prediction; under the Attend-and-Excite sampler (nodes/excite_sampler.py),
    which moves the sampler's x itself, it leaves the model call alone."""

    def __init__(self, base, until, thresholds, layers, downscale):
        self.base, self.until, self.thresholds = base, until, thresholds
        self.layers, self.downscale = layers, downscale
        self.step, self.maps = None, {}

    def __deepcopy__(self, memo):
        return self

    def settings(self, steps):
        return dataclasses.replace(self.base, max_iter_to_alter=resolve(self.until, steps),
                                   thresholds=tuple((resolve(s, steps), t) for s, t in self.thresholds))

    def runs_at(self, step, steps):
        return self.settings(steps).runs_at(step)

    def move(self, guider, x, timestep, model_options):
        """x moved for the step at `timestep` (the sampler's full schedule is in model_options)."""
        sigmas = model_options["transformer_options"]["sample_sigmas"]
        step, steps = step_index(sigmas, timestep.flatten()[0])
        return _excite(guider.inner_model, guider.conds["positive"], x, timestep, model_options, step, steps,
                       self.settings(steps), self.layers, self.downscale, self)

    def predict_noise(self, executor, x, timestep, model_options={}, seed=None):
        to = model_options.get("transformer_options", {})
        sigmas = to.get("sample_sigmas")
        guider = executor.class_obj
        if sigmas is None or to.get(SAMPLER_OWNS_X) or getattr(guider, "conds", {}).get("positive") is None:
            return executor(x, timestep, model_options, seed)
        step, steps = step_index(sigmas, timestep.flatten()[0])
        if not self.runs_at(step, steps):
            return executor(x, timestep, model_options, seed)
        moved = self.move(guider, x, timestep, model_options)
        denoised = executor(moved, timestep, model_options, seed)
        return moved_latent_denoised(x, moved, denoised, float(timestep.flatten()[0]), float(sigmas[step + 1]))


def _levels_text(levels):
    return "; ".join(f"{s}: {', '.join(str(l) for l in layers)}" for s, layers in sorted(levels.items())) or "(none)"


class AttendAndExcite(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuideAttendAndExcite",
            search_aliases=["attend and excite", "attend-and-excite", "missing objects", "token attention"],
            display_name=NAME,
            category=common.CATEGORY,
            description="Attend-and-Excite (Chefer et al. 2023), equal to diffusers' StableDiffusionAttendAndExcitePipeline "
                        "with Euler/DDIM: moves the latent during the first steps until every named subject gets "
                        "cross-attention, so none goes missing.",
            inputs=[
                io.Model.Input("model", tooltip="A UNet model (SD1.x, SD2.x, SDXL)."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="The positive prompt, exactly as typed into the CLIP Text Encode that feeds the "
                                        "sampler's positive input: the words are looked up in it."),
                io.String.Input("words", default="",
                                tooltip="The subjects to excite, comma separated, e.g. 'cat, frog'. A word split into "
                                        "several tokens is excited through its last token; the first occurrence counts."),
                io.Clip.Input("clip", optional=True,
                              tooltip="The CLIP that encodes the prompt; its tokenizer finds the words' token positions. "
                                      "Not needed when token_indices is set."),
                io.String.Input("max_excite_steps", default="25",
                                tooltip="The latent is updated before steps 0 .. this-1: a step count (reference 25) or a "
                                        "percent of the sampler's steps ('50%'). No gradient work runs after it."),
                io.String.Input("thresholds", default="0: 0.05, 10: 0.5, 20: 0.8",
                                tooltip="Iterative refinement: at these steps (or percents, '20%: 0.5') the latent is "
                                        "updated until every subject's attention peak reaches the threshold (reference "
                                        "'0: 0.05, 10: 0.5, 20: 0.8'). Empty = no refinement."),
                io.Float.Input("scale_factor", default=20.0, min=0.0, max=1000.0, step=0.5,
                               tooltip="Step size of the latent update (reference 20)."),
                io.Float.Input("scale_range_start", default=1.0, min=0.0, max=10.0, step=0.05,
                               tooltip="Step size = scale_factor * sqrt(r), r going linearly from this at the first step..."),
                io.Float.Input("scale_range_end", default=0.5, min=0.0, max=10.0, step=0.05,
                               tooltip="...to this at the last step (reference range 1.0 to 0.5)."),
                io.Int.Input("max_refinement_iterations", default=20, min=1, max=200,
                             tooltip="Most updates of one iterative refinement (reference 20)."),
                io.Float.Input("smoothing_sigma", default=0.5, min=0.05, max=10.0, step=0.05,
                               tooltip="Sigma of the 3x3 Gaussian that smooths each map before its peak is taken "
                                       "(reference 0.5; the reference's formula makes the effective std sigma*sqrt(2))."),
                io.Int.Input("attention_downscale", default=4, min=1, max=64,
                             tooltip="Cross-attention maps of the UNet level where the latent is downscaled this many "
                                     "times. 4 = the reference's 16x16 for SD1.x at 512 px; for SDXL 4 is the 32x32 "
                                     "level at 1024 px with the deep (10-block) transformers, which carry the subjects."),
                io.String.Input("token_indices", default="", optional=True,
                                tooltip="Advanced: token positions to excite instead of words, e.g. '2, 5' "
                                        "(<|startoftext|> is 0). Overrides words when set."),
            ],
            outputs=[io.Model.Output(),
                     io.Conditioning.Output(display_name="positive",
                                            tooltip="The prompt encoded with the CLIP input: connect it to the "
                                                    "sampler's positive, so the words are found in exactly the text "
                                                    "it encodes. Needs the CLIP input.")],
        )

    @classmethod
    def execute(cls, model, prompt, words, max_excite_steps, thresholds, scale_factor, scale_range_start,
                scale_range_end, max_refinement_iterations, smoothing_sigma, attention_downscale,
                clip=None, token_indices="") -> io.NodeOutput:
        positive = clip.encode_from_tokens_scheduled(clip.tokenize(prompt)) if clip is not None else None
        if common.unet_layers_or_warn(model, NAME) is None:
            return io.NodeOutput(model, positive)
        levels = cross_attention_levels(model.model.diffusion_model)
        if attention_downscale not in levels:
            raise ValueError(f"attention_downscale {attention_downscale}: this model has no cross-attention there. "
                             f"Its cross-attention levels (downscale: layers) are {_levels_text(levels)}.")
        if token_indices and token_indices.strip():
            indices = parse_indices(token_indices)
        elif clip is None:
            raise ValueError("clip is not connected: connect the CLIP that encodes the prompt so the words can be "
                             "found, or give token_indices.")
        else:
            indices = word_indices(clip, prompt, words)
        until = parse_step(max_excite_steps, "max_excite_steps")
        steps_thresholds = parse_thresholds(thresholds)
        base = ExciteSettings(indices, 0, (), float(scale_factor), (float(scale_range_start), float(scale_range_end)),
                              int(max_refinement_iterations), float(smoothing_sigma))
        exciter = Exciter(base, until, steps_thresholds, levels[attention_downscale], attention_downscale)
        m = model.clone()
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, common.method_key(m, "excite"),
                               exciter.predict_noise)
        m.model_options.setdefault("transformer_options", {})[RECORD_KEY] = exciter
        return io.NodeOutput(m, positive)


def _excite(model, positive, x, timestep, model_options, step, steps, settings, layers, downscale, exciter):
    """x moved by Attend-and-Excite, every image on its own (batch-1 conditional forwards)."""
    h, w = grid(x.shape[-2], x.shape[-1], downscale)
    sigma = timestep[:1]
    c_in = float(model.model_sampling.calculate_input(sigma.float(), torch.ones(1, 1, 1, 1)).flatten()[0])
    evaluate = map_evaluator(comfy.samplers.calc_cond_batch, model, positive, sigma, model_options, layers, h, w,
                             downscale, settings.indices, NAME)
    moved, maps = excite_images(x, step, steps, c_in, settings, evaluate, gradients_through(model.diffusion_model))
    exciter.maps.update({item: m.float().cpu() for item, m in enumerate(maps) if m is not None})
    exciter.step = step
    return moved


class AttendAndExciteMaps(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuideAttendAndExciteMaps",
            search_aliases=["attend and excite", "attention maps", "cross-attention maps"],
            display_name="Attend-and-Excite Maps (AttnGuide)",
            category=common.CATEGORY,
            description="The smoothed cross-attention map of every excited token at the last step Attend-and-Excite "
                        "ran, one image per image and token (bright = attended; a subject whose map stays dark is the "
                        "one that goes missing).",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL output of Attend-and-Excite (AttnGuide) that the sampler used."),
                io.Latent.Input("samples", tooltip="The sampler's output: makes this node run after the sampler."),
                io.Int.Input("scale", default=8, min=1, max=64,
                             tooltip="Each map cell becomes scale x scale pixels (nearest neighbour)."),
            ],
            outputs=[io.Image.Output(tooltip="Images in order image 0 token 0, image 0 token 1, ..., values 0..1.")],
        )

    @classmethod
    def execute(cls, model, samples, scale) -> io.NodeOutput:
        record = model.model_options.get("transformer_options", {}).get(RECORD_KEY)
        if record is None:
            raise ValueError("model: this model has no Attend-and-Excite (AttnGuide) node; connect that node's MODEL output.")
        if not record.maps:
            raise ValueError("No attention maps yet: run a sampler with the Attend-and-Excite model first "
                             "(maps are recorded while max_excite_steps or a threshold step is running).")
        maps = torch.cat([record.maps[i] for i in sorted(record.maps)])
        maps = maps.clamp(0, 1).repeat_interleave(scale, -2).repeat_interleave(scale, -1)
        return io.NodeOutput(maps[..., None].expand(-1, -1, -1, 3).contiguous())
