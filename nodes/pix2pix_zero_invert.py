"""Pix2Pix-Zero's regularised DDIM inversion as a ComfyUI node: a LATENT (VAE Encode of a
real image, or a generated latent) -> the noise latent a sampler run on the same SIGMAS
starts from.

The inversion runs inside ComfyUI's own sampling (a CFG guider at CFG 1 and a sampler
function that walks the sigmas upwards), so the host loads the model, prepares the
conditioning, shows progress and previews, and can interrupt it.
"""
import comfy.model_management
import comfy.model_sampling
import comfy.samplers
import comfy.utils
import latent_preview
import torch

from ..guidance.pix2pix_zero import InversionSettings, inversion_step, roll_generators
from . import common
from .comfy_api_compat import io, node_schema


def check_latent(model, samples, input_name="latent"):
    channels = getattr(model.model.latent_format, "latent_channels", 4)
    if samples.ndim != 4:
        raise ValueError(f"{input_name}: expected an image latent (batch, channels, height, width), got shape "
                         f"{tuple(samples.shape)}; video latents are not supported.")
    if samples.shape[1] != channels:
        raise ValueError(f"{input_name} has {samples.shape[1]} channels but this model's latents have {channels}: "
                         "encode the image with this model's VAE.")


def check_sigmas(sigmas):
    s = [float(v) for v in sigmas.flatten()]
    if len(s) < 2 or any(a <= b for a, b in zip(s, s[1:])):
        raise ValueError(f"sigmas: need a descending schedule of at least 2 values (from BasicScheduler, "
                         f"scheduler ddim_uniform), got {len(s)} values.")


def inversion_function(settings, seed):
    """A k-diffusion-style sampler function that inverts: from sigmas[-1] up to sigmas[0]."""
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        extra_args = extra_args or {}
        sampling = model.inner_model.inner_model.model_sampling
        s_in = x.new_ones([x.shape[0]])
        generators = roll_generators(seed, x.shape[0])

        def c_in(sigma):
            return float(sampling.calculate_input(torch.tensor([sigma], dtype=torch.float32),
                                                  torch.ones(1, 1, 1, 1)).flatten()[0])

        def denoise(xe, sigma):
            return model(xe, s_in * sigma, **extra_args)

        levels = [float(s) for s in sigmas.flatten()][::-1]
        for i in range(len(levels) - 1):
            x = inversion_step(x, levels[i], levels[i + 1], denoise, settings, generators, c_in)
            if callback is not None:
                callback({"x": x, "i": i, "sigma": levels[i + 1], "sigma_hat": levels[i + 1], "denoised": x})
        return x
    return sample


def check_sampling(model):
    """The inversion steps x = x0 + sigma * eps: models that sample that way (eps and v prediction)."""
    sampling = model.get_model_object("model_sampling")
    if not isinstance(sampling, comfy.model_sampling.EPS) or isinstance(sampling, comfy.model_sampling.X0):
        raise ValueError(f"model: Pix2Pix-Zero's DDIM inversion needs an eps- or v-prediction model (SD1.x, SD2.x, "
                         f"SDXL); this one samples with {type(sampling).__name__}.")


def invert_latent(model, positive, samples, sigmas, settings, seed, callback=None, disable_pbar=True):
    check_latent(model, samples)
    check_sigmas(sigmas)
    check_sampling(model)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, positive)
    guider.set_cfg(1.0)
    sampler = comfy.samplers.KSAMPLER(inversion_function(settings, seed))
    out = guider.sample(torch.zeros_like(samples), samples, sampler, sigmas, callback=callback,
                        disable_pbar=disable_pbar, seed=seed)
    return out.to(comfy.model_management.intermediate_device())


class Pix2PixZeroInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuidePix2PixZeroInvert",
            search_aliases=["pix2pix zero", "pix2pix-zero", "DDIM inversion", "inversion", "invert image"],
            display_name="Pix2Pix-Zero Inversion (AttnGuide)",
            category=common.CATEGORY,
            description="DDIM inversion with Pix2Pix-Zero's auto-correlation and KL regularisation (diffusers' "
                        "StableDiffusionPix2PixZeroPipeline.invert): turns a latent into the noise that the same "
                        "schedule denoises back into it. Feed the result to Pix2Pix-Zero Edit with the same sigmas.",
            inputs=[
                io.Model.Input("model", tooltip="A UNet model (SD1.x, SD2.x, SDXL)."),
                io.Conditioning.Input("positive", tooltip="A caption of the image (what it shows), encoded with the "
                                                          "model's CLIP; use the same prompt as the edit's positive."),
                io.Latent.Input("latent", tooltip="The image to invert: VAE Encode of a photo, or a sampler's output."),
                io.Sigmas.Input("sigmas", tooltip="The schedule the edit will use, e.g. BasicScheduler with scheduler "
                                                  "ddim_uniform and 50 steps (the reference's DDIM). Walked upwards."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff,
                             tooltip="Seed of the random shifts of the auto-correlation penalty (image i uses seed + i)."),
                io.Float.Input("lambda_auto_corr", default=20.0, min=0.0, max=1000.0, step=0.5,
                               tooltip="Weight of the auto-correlation penalty that keeps the inverted noise "
                                       "spatially uncorrelated (reference 20; 0 = off)."),
                io.Float.Input("lambda_kl", default=20.0, min=0.0, max=1000.0, step=0.5,
                               tooltip="Weight of the KL penalty that keeps the noise's mean 0 and variance 1 "
                                       "(reference 20; 0 = off)."),
                io.Int.Input("regularization_steps", default=5, min=0, max=100,
                             tooltip="Regularisation rounds per inversion step (reference 5; 0 = plain DDIM inversion)."),
                io.Int.Input("auto_corr_rolls", default=5, min=1, max=100,
                             tooltip="Random shifts per round of the auto-correlation penalty (reference 5)."),
            ],
            outputs=[io.Latent.Output(display_name="noise",
                                      tooltip="The inverted noise latent: the start of a sampler run on the same sigmas.")],
        )

    @classmethod
    def execute(cls, model, positive, latent, sigmas, seed, lambda_auto_corr, lambda_kl, regularization_steps,
                auto_corr_rolls) -> io.NodeOutput:
        settings = InversionSettings(float(lambda_auto_corr), float(lambda_kl), int(regularization_steps),
                                     int(auto_corr_rolls))
        samples = latent["samples"]
        callback = latent_preview.prepare_callback(model, max(1, sigmas.shape[-1] - 1))
        out = invert_latent(model, positive, samples, sigmas, settings, seed, callback,
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED)
        return io.NodeOutput({"samples": out})
