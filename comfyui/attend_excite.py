"""Attend-and-Excite for ComfyUI.

A PREDICT_NOISE wrapper moves the latent before each model call of the refinement
window: per image, grad-enabled conditional forwards with the cross-attention of one
resolution captured (attn2 replace patches that exist only in that forward), then the
normal CFG call at the moved latent. A measuring forward stops at its last captured
layer. The sampler keeps its own x, so the wrapper returns the denoised prediction that
carries the move to the sampler's next state (guidance.latent_update.moved_latent_denoised):
exact for Euler and DDIM. For other samplers nodes/excite_sampler.py moves the sampler's x.
"""
import comfy.patcher_extension
import comfy.samplers
import torch

from ..attention.excite_forward import map_evaluator
from ..attention.grad_forward import gradients_through
from ..attention.step_window import step_index
from ..attention.unet_levels import cross_attention_levels, grid
from ..guidance.latent_update import moved_latent_denoised
from ..methods.attend_excite import build, excite_images
from ..methods.build import Target
from . import common
from .prompt_tokens import word_indices

RECORD_KEY = "attnguide_excite"

SAMPLER_OWNS_X = "attnguide_excite_sampler"

NAME = "Attend-and-Excite (AttnGuide)"

class Exciter:
    """One node's Attend-and-Excite: moves a batch's latent before a step, and keeps the
    excited tokens' maps of the last step it ran (per image) for the maps node.

    The PREDICT_NOISE wrapper moves x and hands the move to the sampler through the
    denoised prediction; under the Attend-and-Excite sampler (nodes/excite_sampler.py),
    which moves the sampler's x itself, it leaves the model call alone."""

    def __init__(self, plan):
        self.plan, self.layers, self.downscale = plan, plan.layers, plan.downscale
        self.step, self.maps = None, {}

    def __deepcopy__(self, memo):
        return self

    def settings(self, steps):
        return self.plan.settings(steps)

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


def excite_model(model, prompt, clip, params):
    """A clone of `model` whose sampling runs Attend-and-Excite (params: the method's, by name); the model
    itself where it is not a UNet (with a warning)."""
    if common.unet_layers_or_warn(model, NAME) is None:
        return model
    target = Target("excite", levels=cross_attention_levels(model.model.diffusion_model))
    plan = build(target, **params, word_indices=lambda words: _word_indices(clip, prompt, words))
    exciter = Exciter(plan)
    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, common.method_key(m, "excite"),
                           exciter.predict_noise)
    m.model_options.setdefault("transformer_options", {})[RECORD_KEY] = exciter
    return m


def _word_indices(clip, prompt, words):
    if clip is None:
        raise ValueError("clip is not connected: connect the CLIP that encodes the prompt so the words can be "
                         "found, or give token_indices.")
    return word_indices(clip, prompt, words)


def maps_image(model, scale):
    """The last recorded maps of every excited token as an IMAGE batch (Attend-and-Excite Maps)."""
    record = model.model_options.get("transformer_options", {}).get(RECORD_KEY)
    if record is None:
        raise ValueError("model: this model has no Attend-and-Excite (AttnGuide) node; connect that node's MODEL output.")
    if not record.maps:
        raise ValueError("No attention maps yet: run a sampler with the Attend-and-Excite model first "
                         "(maps are recorded while max_excite_steps or a threshold step is running).")
    maps = torch.cat([record.maps[i] for i in sorted(record.maps)])
    maps = maps.clamp(0, 1).repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    return maps[..., None].expand(-1, -1, -1, 3).contiguous()
