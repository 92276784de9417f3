from ..attention.guidance_methods import sag_layer, sag_method
from ..guidance.schedule import Schedule
from . import common
from .comfy_api_compat import io, node_schema
from .router_comfy import install, run_extra


class SelfAttentionGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuideSAG",
            search_aliases=["SAG", "self-attention guidance", "self attention guidance", "blur guidance"],
            display_name="Self-Attention Guidance (AttnGuide)",
            category=common.CATEGORY,
            description="Self-Attention Guidance (Hong et al. 2023), equal to diffusers' StableDiffusionSAGPipeline. "
                        "Costs one extra UNet pass at batch size b per step while active.",
            inputs=[
                io.Model.Input("model", tooltip="A UNet model (SD1.x, SD2.x, SDXL)."),
                io.Float.Input("scale", default=0.75, min=-10.0, max=10.0, step=0.01, round=0.01,
                               tooltip="SAG scale. 0.75 is the diffusers default; ComfyUI's built-in node uses 0.5."),
                io.Float.Input("blur_sigma", default=1.0, min=0.0, max=10.0, step=0.1,
                               tooltip="Sigma of the 9x9 Gaussian blur of the masked regions. 1.0 is the diffusers "
                                       "default; ComfyUI's built-in node uses 2.0."),
                io.Float.Input("threshold", default=1.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Blur where a position receives more than this total attention (head-averaged, "
                                       "summed over queries; the mean is exactly 1). 1.0 in diffusers and ComfyUI."),
                io.String.Input("layer", default="m0.0",
                                tooltip="Self-attention layer whose map picks the regions to blur: d/m/u + block.depth "
                                        "(ComfyUI block ids). Default m0.0, the first transformer of the middle block, "
                                        "as in diffusers."),
                *common.schedule_inputs(),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, scale, blur_sigma, threshold, layer, start_percent, end_percent) -> io.NodeOutput:
        layers = common.unet_layers_or_warn(model, "Self-Attention Guidance (AttnGuide)")
        if layers is None:
            return io.NodeOutput(model)
        selected = sag_layer(common.select_layers(layer, layers, "layer"), layer)
        if scale == 0:
            return io.NodeOutput(model)
        m = model.clone()
        method, post_cfg = sag_method(common.method_key(m, "sag"), selected, Schedule(start_percent, end_percent),
                                      scale, blur_sigma, threshold, run_extra)
        install(m, method)
        m.set_model_sampler_post_cfg_function(post_cfg)
        return io.NodeOutput(m)
