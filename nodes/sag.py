from ..comfyui.router import apply
from ..methods.sag import SPEC, build
from .comfy_api_compat import io, node_schema
from .widgets import CATEGORY, model_patch


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
            **model_patch(SPEC))

    @classmethod
    def execute(cls, model, **params) -> io.NodeOutput:
        return io.NodeOutput(apply(model, SPEC, build, params))
