"""Pix2Pix-Zero Edit node (AttnGuidePix2PixZeroEdit); the guided sampling is comfyui/pix2pix_zero_edit.py."""
import comfy.model_management
import comfy.patcher_extension
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..comfyui.pix2pix_zero_edit import NAME, edit_latent
from ..comfyui.pix2pix_zero_invert import check_latent
from ..methods.pix2pix_zero import SPEC
from .comfy_api_compat import io, node_schema
from .sockets import Direction, Maps
from .widgets import CATEGORY, widgets


class Pix2PixZeroEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuidePix2PixZeroEdit",
            search_aliases=["pix2pix zero", "pix2pix-zero", "image editing", "cross-attention guidance"],
            display_name=NAME,
            category=CATEGORY,
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
                *widgets(SPEC, "guidance_amount"),
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
