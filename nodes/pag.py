from ..attention.math import identity_attention
from ..attention.router import AttentionHook, Method
from ..attention.step_window import Schedule
from ..comfyui import common
from ..comfyui.router import install
from ..methods.pag import SPEC, pag_post_cfg
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
            description="Perturbed-Attention Guidance (Ahn et al. 2024), equal to diffusers' StableDiffusionPAGPipeline. "
                        "The perturbed rows run in the same UNet call as cond/uncond and share the "
                        "conditional rows' computation up to the first perturbed layer.",
            inputs=[
                io.Model.Input("model", tooltip="A UNet model (SD1.x, SD2.x, SDXL)."),
                *widgets(SPEC),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, scale, adaptive_scale, layers, rescale, start_percent, end_percent) -> io.NodeOutput:
        available = common.unet_layers_or_warn(model, "Perturbed-Attention Guidance (AttnGuide)")
        if available is None:
            return io.NodeOutput(model)
        selected = common.select_layers(layers, available, "layers")
        if scale == 0:
            return io.NodeOutput(model)
        m = model.clone()
        key = common.method_key(m, "pag")

        def perturb(q, k, v, heads, ctx, options, next):
            return identity_attention(q, k, v, heads)

        hook = AttentionHook(frozenset(selected), lambda ctx: {key}, perturb)
        install(m, Method(key, Schedule(start_percent, end_percent), (hook,), extra_cond_rows=True))
        m.set_model_sampler_post_cfg_function(pag_post_cfg(key, scale, adaptive_scale, rescale, _timestep))
        return io.NodeOutput(m)


def _timestep(args):
    return args["model"].model_sampling.timestep(args["sigma"])
