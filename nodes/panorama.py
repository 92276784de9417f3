"""MultiDiffusion Panorama node (AttnGuidePanorama); the tiler is comfyui/panorama.py."""
from ..comfyui.panorama import apply_panorama
from ..methods.panorama import SPEC
from .comfy_api_compat import io, node_schema
from .widgets import CATEGORY, widgets


class Panorama(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuidePanorama",
            search_aliases=["MultiDiffusion", "panorama", "tiled", "tiled diffusion", "360 panorama", "wide image"],
            display_name="MultiDiffusion Panorama (AttnGuide)",
            category=CATEGORY,
            description="MultiDiffusion (Bar-Tal et al. 2023), equal to diffusers' StableDiffusionPanoramaPipeline: "
                        "the model denoises overlapping windows of any size of latent and averages them at every step. "
                        "Optional 360-degree wrap-around, feathered weights, region prompts (AttnGuide Panorama Region), "
                        "ControlNet hints cropped per window; SAG/PAG/SEGA from this pack run per window.",
            inputs=[
                io.Model.Input("model", tooltip="The model to run on windows (any ComfyUI model; SAG/PAG need a UNet)."),
                *widgets(SPEC),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, **params) -> io.NodeOutput:
        return io.NodeOutput(apply_panorama(model, params))
