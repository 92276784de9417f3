"""Pix2Pix-Zero Inversion node (AttnGuidePix2PixZeroInvert); the inversion is comfyui/pix2pix_zero_invert.py."""
import comfy.model_management
import comfy.model_sampling
import comfy.samplers
import comfy.utils
import latent_preview

from ..comfyui.pix2pix_zero_invert import invert_latent
from ..methods.pix2pix_zero import SPEC, inversion_settings
from .comfy_api_compat import io, node_schema
from .widgets import CATEGORY, widgets


class Pix2PixZeroInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuidePix2PixZeroInvert",
            search_aliases=["pix2pix zero", "pix2pix-zero", "DDIM inversion", "inversion", "invert image"],
            display_name="Pix2Pix-Zero Inversion (AttnGuide)",
            category=CATEGORY,
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
                *widgets(SPEC, "seed", "lambda_auto_corr", "lambda_kl", "regularization_steps", "auto_corr_rolls"),
            ],
            outputs=[io.Latent.Output(display_name="noise",
                                      tooltip="The inverted noise latent: the start of a sampler run on the same sigmas.")],
        )

    @classmethod
    def execute(cls, model, positive, latent, sigmas, seed, lambda_auto_corr, lambda_kl, regularization_steps,
                auto_corr_rolls) -> io.NodeOutput:
        settings = inversion_settings(lambda_auto_corr, lambda_kl, regularization_steps, auto_corr_rolls)
        samples = latent["samples"]
        callback = latent_preview.prepare_callback(model, max(1, sigmas.shape[-1] - 1))
        out = invert_latent(model, positive, samples, sigmas, settings, seed, callback,
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED)
        return io.NodeOutput({"samples": out})
