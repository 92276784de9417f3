"""Self-Attention Guidance (Hong et al. 2023, "Improving Sample Quality of Diffusion Models Using
Self-Attention Guidance"): its parameters, as diffusers' StableDiffusionSAGPipeline names them."""
from .spec import STEP_WINDOW, MethodSpec, Param

SPEC = MethodSpec(
    "sag", "Self-Attention Guidance (AttnGuide)", "SAG", "AttnGuideSAG", img2img=True, hires="apply",
    params=(
        Param("scale", "float", 0.75, "Scale", minimum=-10.0, maximum=10.0, step=0.01, round=0.01,
              tooltip="SAG scale. 0.75 is the diffusers default; ComfyUI's built-in node uses 0.5."),
        Param("blur_sigma", "float", 1.0, "Blur sigma", minimum=0.0, maximum=10.0, step=0.1,
              tooltip="Sigma of the 9x9 Gaussian blur of the masked regions. 1.0 is the diffusers "
                      "default; ComfyUI's built-in node uses 2.0."),
        Param("threshold", "float", 1.0, "Mask threshold", minimum=0.0, maximum=10.0, step=0.01,
              tooltip="Blur where a position receives more than this total attention (head-averaged, "
                      "summed over queries; the mean is exactly 1). 1.0 in diffusers and ComfyUI."),
        Param("layer", "text", "m0.0", "Layer",
              tooltip="Self-attention layer whose map picks the regions to blur: d/m/u + block.depth "
                      "(ComfyUI block ids). Default m0.0, the first transformer of the middle block, "
                      "as in diffusers."),
        *STEP_WINDOW,
    ))
