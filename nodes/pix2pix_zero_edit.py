"""Pix2Pix-Zero's edit as a ComfyUI sampler node.

The host's sampler runs one batch of 2b latents: rows 0..b-1 are the edit, rows b..2b-1 the
reference (source prompt), both from the same noise. A PREDICT_NOISE wrapper on a clone of
the model computes, per step:
  reference rows: plain CFG with the source prompt; the cross-attention probabilities of
                  every attn2 layer are held (for this step only) per CFG half;
  edit rows:      one gradient step on both CFG halves' inputs against those maps, then
                  CFG of uncond(x_u') and cond+direction(x_c'), carried to the sampler's x
                  (guidance.pix2pix_zero.edit_denoised: exact for Euler and DDIM).
Every model call here labels its rows with no router role, so the pack's other methods'
hooks leave them alone.
"""
import math

import comfy.model_management
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
import torch.nn.functional as F

from ..attention.cross_maps import ReferenceMaps, attention_from_probs, cross_attention_probs
from ..attention.layers import unet_layers
from ..attention.model_calls import unrouted
from ..attention.reference_attend import comparing, recording
from ..attention.unet_levels import grid
from ..guidance import pix2pix_zero as p2pz
from ..guidance.schedule import step_index
from . import common
from .comfy_api_compat import io, node_schema
from .grad_forward import gradients_through
from .pix2pix_zero import Direction
from .pix2pix_zero_invert import check_latent, check_sigmas

EDIT_COND = "attnguide_p2pz_edit"
Maps = io.Custom("ATTNGUIDE_P2PZ_MAPS")
NAME = "Pix2Pix-Zero Edit (AttnGuide)"


class AttentionPreview:
    """Cross-attention of the conditional rows, averaged over heads, layers and steps, on
    the latent grid: (batch, h, w, tokens) for the reference and the edit. Sums stay at
    each layer's own resolution on the model's device until mean() is asked."""

    def __init__(self, height, width):
        self.height, self.width = height, width
        self.sums, self.counts = {}, {}

    def add(self, key, probs):
        b, heads, queries, tokens = probs.shape
        scale = 1
        while grid(self.height, self.width, scale)[0] * grid(self.height, self.width, scale)[1] > queries:
            scale *= 2
        h, w = grid(self.height, self.width, scale)
        if h * w != queries:
            return
        m = probs.detach().float().mean(1).reshape(b, h, w, tokens)
        at = (key, h, w)
        self.sums[at] = m if at not in self.sums else self.sums[at] + m
        self.counts[key] = self.counts.get(key, 0) + 1

    def mean(self, key):
        parts = [F.interpolate(m.permute(0, 3, 1, 2), size=(self.height, self.width), mode="nearest")
                 for (k, _, _), m in self.sums.items() if k == key]
        if not parts:
            return None
        return (sum(parts) / self.counts[key]).permute(0, 2, 3, 1).cpu()


class Editor:
    """The PREDICT_NOISE wrapper of one edit run."""

    def __init__(self, amount, layers, map_dtype):
        self.amount, self.layers, self.map_dtype = amount, layers, map_dtype
        self.preview = None
        self.held = 0   # most bytes of reference maps held at once

    def __deepcopy__(self, memo):
        return self

    def _options(self, model_options, n, attend=None):
        """Options of one of our model calls: no router roles; `attend` on every attn2 layer."""
        return unrouted(model_options, n, self.layers, attend)

    def predict_noise(self, executor, x, timestep, model_options={}, seed=None):
        guider = executor.class_obj
        to = model_options.get("transformer_options", {})
        model = guider.inner_model
        b = x.shape[0] // 2
        if self.preview is None:
            self.preview = AttentionPreview(*x.shape[-2:])
        sigmas = to.get("sample_sigmas")
        sigma = float(timestep.flatten()[0])
        step, _ = step_index(sigmas, sigma)
        sigma_next = float(sigmas[step + 1]) if step + 1 < len(sigmas) else 0.0
        cond, edit = guider.conds.get("positive"), guider.conds.get(EDIT_COND)
        cfg = guider.cfg
        uncond = None if math.isclose(cfg, 1.0) else guider.conds.get("negative")
        x_edit, x_ref = x[:b], x[b:]
        ts = timestep[:b]
        maps = ReferenceMaps(self.map_dtype)

        def record(key):
            def seen(probs):
                if key == "cond":
                    self.preview.add("reference", probs)
                self.held = max(self.held, maps.nbytes())
            return recording(maps, key, seen)

        # each half on its own, in the batch layout of the edit's calls: with an empty direction
        # the edit's maps are then bit-equal to these and the guidance does nothing
        d_ref_c = comfy.samplers.calc_cond_batch(model, [cond], x_ref, ts, self._options(model_options, 1, record("cond")))[0]
        d_ref_u = None
        if uncond is not None:
            d_ref_u = comfy.samplers.calc_cond_batch(model, [uncond], x_ref, ts,
                                                     self._options(model_options, 1, record("uncond")))[0]
        d_ref = self._cfg(model, d_ref_c, d_ref_u, cfg, x_ref, ts, model_options, cond, uncond)

        halves = 1 if uncond is None else 2
        loss = {}

        def loss_fn(xu, xc):
            comfy.samplers.calc_cond_batch(model, [edit], xc, ts,
                                           self._options(model_options, 1, comparing(maps, "cond", halves, loss)))
            if uncond is not None:
                comfy.samplers.calc_cond_batch(model, [uncond], xu, ts,
                                               self._options(model_options, 1, comparing(maps, "uncond", halves, loss)))
            return loss["value"]

        c_in = float(model.model_sampling.calculate_input(timestep[:1].float(), torch.ones(1, 1, 1, 1)).flatten()[0])
        if self.amount != 0:
            with gradients_through(model.diffusion_model):
                x_u, x_c = p2pz.guided_latents(x_edit, loss_fn, self.amount, c_in)
        else:
            x_u = x_c = x_edit
        if uncond is None:
            x_u = x_c

        def preview(q, k, v, extra_options):
            probs = cross_attention_probs(q, k, extra_options["n_heads"])
            self.preview.add("edit", probs)
            return attention_from_probs(probs, v, extra_options["n_heads"])

        d_c = comfy.samplers.calc_cond_batch(model, [edit], x_c, ts, self._options(model_options, 1, preview))[0]
        d_u = None
        if uncond is not None:
            d_u = comfy.samplers.calc_cond_batch(model, [uncond], x_u, ts, self._options(model_options, 1))[0]
        d = self._cfg(model, p2pz.cond_at(x_u, x_c, d_c), d_u, cfg, x_u, ts, model_options, edit, uncond)
        d_edit = p2pz.edit_denoised(x_edit, x_u, d, sigma, sigma_next)
        return torch.cat([d_edit.to(x.dtype), d_ref.to(x.dtype)])

    @staticmethod
    def _cfg(model, cond_pred, uncond_pred, cfg, x, ts, model_options, cond, uncond):
        if uncond_pred is None:
            return cond_pred
        return comfy.samplers.cfg_function(model, cond_pred, uncond_pred, cfg, x, ts, model_options, cond, uncond)


def edited_conditioning(positive, direction):
    return [[p2pz.add_direction(c, direction.tensor), dict(extra)] for c, extra in positive]


def edit_latent(model, positive, negative, direction, samples, sampler, sigmas, cfg, amount, noise=None,
                callback=None, disable_pbar=True, seed=0, map_dtype=torch.float16):
    """(edited latent, reference latent, Editor) of one Pix2Pix-Zero edit; noise None starts
    from the latent itself (an inverted noise latent)."""
    check_latent(model, samples)
    check_sigmas(sigmas)
    if common.unet_layers_or_warn(model, NAME) is None:
        raise ValueError(f"model: {NAME} needs the cross-attention of a UNet model (SD1.x, SD2.x, SDXL).")
    edit = edited_conditioning(positive, direction)
    editor = Editor(float(amount), unet_layers(model.model.diffusion_model), map_dtype)
    m = model.clone()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, common.method_key(m, "p2pz"),
                           editor.predict_noise)
    guider = comfy.samplers.CFGGuider(m)
    guider.inner_set_conds({"positive": positive, "negative": negative, EDIT_COND: edit})
    guider.set_cfg(cfg)
    b = samples.shape[0]
    noise = torch.zeros_like(samples) if noise is None else noise
    part = None if callback is None else (lambda i, x0, x, total: callback(i, x0[:b], x[:b], total))
    out = guider.sample(torch.cat([noise, noise]), torch.cat([samples, samples]), sampler, sigmas, callback=part,
                        disable_pbar=disable_pbar, seed=seed)
    out = out.to(comfy.model_management.intermediate_device())
    return out[:b], out[b:], editor


class Pix2PixZeroEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuidePix2PixZeroEdit",
            search_aliases=["pix2pix zero", "pix2pix-zero", "image editing", "cross-attention guidance"],
            display_name=NAME,
            category=common.CATEGORY,
            description="Pix2Pix-Zero (Parmar et al. 2023), equal to diffusers' StableDiffusionPix2PixZeroPipeline with "
                        "Euler/DDIM: samples the source prompt and, alongside, the prompt moved by the edit direction "
                        "while cross-attention guidance keeps the edit's attention on the source's, so the structure "
                        "stays and the concept changes.",
            inputs=[
                io.Model.Input("model", tooltip="A UNet model (SD1.x, SD2.x, SDXL)."),
                io.Conditioning.Input("positive", tooltip="The source prompt: a caption of the image (the one given "
                                                          "to the inversion). The edit adds the direction to it."),
                io.Conditioning.Input("negative", tooltip="The negative prompt (the reference uses the empty prompt)."),
                Direction.Input("direction", tooltip="From Pix2Pix-Zero Direction or Load Direction (AttnGuide)."),
                io.Latent.Input("latent", tooltip="The noise latent from Pix2Pix-Zero Inversion (AttnGuide), or with "
                                                  "add_noise an Empty Latent Image to edit a generated image."),
                io.Sampler.Input("sampler", tooltip="The sampler, e.g. KSamplerSelect 'ddim' or 'euler' (exact); other "
                                                    "samplers carry the guided latent to their step to first order."),
                io.Sigmas.Input("sigmas", tooltip="The same schedule the inversion used (BasicScheduler, ddim_uniform)."),
                io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale (reference 7.5)."),
                io.Float.Input("guidance_amount", default=0.1, min=0.0, max=1000.0, step=0.01,
                               tooltip="Cross-attention guidance: step size of the one gradient step per denoising "
                                       "step that pulls the edit's cross-attention maps towards the source's "
                                       "(reference 0.1). 0 = the direction alone."),
                io.Combo.Input("add_noise", options=["disable", "enable"], default="disable",
                               tooltip="disable for an inverted latent (it already is the noise). enable: noise from "
                                       "noise_seed is added, as KSampler does, to edit a generated image (give the "
                                       "seed, sampler and sigmas that generated it, and its prompt as positive)."),
                io.Int.Input("noise_seed", default=0, min=0, max=0xffffffffffffffff,
                             tooltip="Seed of the added noise (used with add_noise)."),
            ],
            outputs=[io.Latent.Output(display_name="edited"),
                     io.Latent.Output(display_name="reference",
                                      tooltip="The source prompt's sample from the same noise (the reconstruction)."),
                     Maps.Output(display_name="maps",
                                 tooltip="Cross-attention maps of the reference and the edit, for the maps preview.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, direction, latent, sampler, sigmas, cfg, guidance_amount, add_noise,
                noise_seed) -> io.NodeOutput:
        samples = latent["samples"]
        check_latent(model, samples)
        noise = comfy.sample.prepare_noise(samples, noise_seed) if add_noise == "enable" else None
        callback = latent_preview.prepare_callback(model, max(1, sigmas.shape[-1] - 1))
        edited, reference, editor = edit_latent(model, positive, negative, direction, samples, sampler, sigmas, cfg,
                                                guidance_amount, noise, callback,
                                                not comfy.utils.PROGRESS_BAR_ENABLED, noise_seed)
        return io.NodeOutput({"samples": edited}, {"samples": reference}, editor.preview)
