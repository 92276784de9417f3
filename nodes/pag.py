from ..attention.guidance_methods import pag_post_cfg
from ..attention.math import identity_attention
from ..attention.router import AttentionHook, Method
from ..guidance.schedule import Schedule
from . import common
from .comfy_api_compat import io, node_schema
from .router_comfy import install


class PerturbedAttentionGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuidePAG",
            search_aliases=["PAG", "perturbed attention", "perturbed-attention guidance", "identity attention"],
            display_name="Perturbed-Attention Guidance (AttnGuide)",
            category=common.CATEGORY,
            description="Perturbed-Attention Guidance (Ahn et al. 2024), equal to diffusers' StableDiffusionPAGPipeline. "
                        "The perturbed rows run in the same UNet call as cond/uncond and share the "
                        "conditional rows' computation up to the first perturbed layer.",
            inputs=[
                io.Model.Input("model", tooltip="A UNet model (SD1.x, SD2.x, SDXL)."),
                io.Float.Input("scale", default=3.0, min=0.0, max=100.0, step=0.01, round=0.01,
                               tooltip="PAG scale (diffusers and ComfyUI default 3.0). 0 turns it off."),
                io.Float.Input("adaptive_scale", default=0.0, min=0.0, max=1.0, step=0.0001, round=0.0001,
                               tooltip="Lower the scale as sampling proceeds: scale - adaptive_scale * (1000 - timestep), "
                                       "never below 0 (diffusers' pag_adaptive_scale). 0 keeps it constant."),
                io.String.Input("layers", default="m0",
                                tooltip="Self-attention layers to perturb: d/m/u + block[.depth], ranges with '-', "
                                        "comma separated (ComfyUI block ids). Default m0: every transformer of the "
                                        "middle block, as diffusers' 'mid' and ComfyUI's built-in node."),
                io.Float.Input("rescale", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Guidance rescale (diffusers' guidance_rescale) applied to the CFG+PAG result "
                                       "against the conditional prediction; only with CFG > 1. 0 = off."),
                *common.schedule_inputs(),
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
