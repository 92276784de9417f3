from ..comfyui import common
from ..comfyui.router import install
from ..methods.pag import AUTO_LAYERS, SPEC, pag_method, pag_post_cfg
from .comfy_api_compat import io, node_schema
from .widgets import CATEGORY, widgets


class PerturbedAttentionGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuidePAG",
            search_aliases=["PAG", "perturbed attention", "perturbed-attention guidance", "identity attention"],
            display_name="Perturbed-Attention Guidance (AttnGuide)",
            category=CATEGORY,
            description="Perturbed-Attention Guidance (Ahn et al. 2024), equal to diffusers' PAG pipelines (SD1.x, SDXL, "
                        "SD3) and PAG guider (Flux-family, Qwen-Image). The perturbed rows run in the same model call as "
                        "cond/uncond and share the conditional rows' computation up to the first perturbed layer.",
            inputs=[
                io.Model.Input("model", tooltip="A UNet (SD1.x, SD2.x, SDXL) or an SD3/SD3.5, Flux-family or "
                                                "Qwen-Image transformer."),
                *widgets(SPEC),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, scale, adaptive_scale, layers, rescale, start_percent, end_percent) -> io.NodeOutput:
        found = common.attention_layers_or_warn(model, "Perturbed-Attention Guidance (AttnGuide)")
        if found is None:
            return io.NodeOutput(model)
        family, available = found
        selected = common.select_layers(layers, available, "layers", AUTO_LAYERS[family])
        if scale == 0:
            return io.NodeOutput(model)
        m = model.clone()
        key = common.method_key(m, "pag")
        install(m, pag_method(key, family, selected, start_percent, end_percent))
        m.set_model_sampler_post_cfg_function(pag_post_cfg(key, scale, adaptive_scale, rescale, common.diffusers_timestep))
        return io.NodeOutput(m)

