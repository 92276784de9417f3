from ..comfyui.router import apply
from ..methods.pag import SPEC, build
from .comfy_api_compat import io, node_schema
from .widgets import CATEGORY, model_patch


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
            **model_patch(SPEC))

    @classmethod
    def execute(cls, model, **params) -> io.NodeOutput:
        return io.NodeOutput(apply(model, SPEC, build, params))
