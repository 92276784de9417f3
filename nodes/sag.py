from ..attention.step_window import Schedule
from ..comfyui import common
from ..comfyui.router import install, run_extra
from ..methods.sag import SPEC, auto_layer, sag_layer, sag_method
from .comfy_api_compat import io, node_schema
from .widgets import CATEGORY, widgets


class SelfAttentionGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuideSAG",
            search_aliases=["SAG", "self-attention guidance", "self attention guidance", "blur guidance"],
            display_name="Self-Attention Guidance (AttnGuide)",
            category=CATEGORY,
            description="Self-Attention Guidance (Hong et al. 2023), equal to diffusers' StableDiffusionSAGPipeline. "
                        "Costs one extra UNet pass at batch size b per step while active.",
            inputs=[
                io.Model.Input("model", tooltip="A UNet (SD1.x, SD2.x, SDXL) or an SD3/SD3.5, Flux-family or "
                                                "Qwen-Image transformer."),
                *widgets(SPEC),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, scale, blur_sigma, threshold, layer, start_percent, end_percent) -> io.NodeOutput:
        found = common.attention_layers_or_warn(model, "Self-Attention Guidance (AttnGuide)")
        if found is None:
            return io.NodeOutput(model)
        family, layers = found
        selected = sag_layer(common.select_layers(layer, layers, "layer", auto_layer(family, layers)), layer)
        if scale == 0:
            return io.NodeOutput(model)
        m = model.clone()
        method, post_cfg = sag_method(common.method_key(m, "sag"), selected, Schedule(start_percent, end_percent),
                                      scale, blur_sigma, threshold, run_extra)
        install(m, method)
        m.set_model_sampler_post_cfg_function(post_cfg)
        return io.NodeOutput(m)
