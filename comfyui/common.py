"""What the pack's ComfyUI machinery shares: model checks, method keys, one warning per run."""
import logging

import comfy.model_sampling

from ..attention.dit_blocks import dit_family, dit_layers
from ..attention.layers import is_unet, unet_layers
from ..attention import router as routing

_LOG = logging.getLogger("attnguide")


def unet_layers_or_warn(model, node_name):
    """The model's UNet self-attention layers, or None (with a warning) for models we cannot serve."""
    diffusion_model = model.model.diffusion_model
    if not is_unet(diffusion_model):
        _LOG.warning("%s: %s (%s) is not a UNet model; this node needs the self-attention of a UNet "
                     "(SD1.x, SD2.x, SDXL). The model is returned unchanged.",
                     node_name, type(model.model).__name__, type(diffusion_model).__name__)
        return None
    return unet_layers(diffusion_model)


def attention_layers_or_warn(model, node_name):
    """(family key, self-attention layers) of a UNet or a DiT the pack addresses ("unet", "sd3",
    "flux", "qwen_image"); None, with a warning naming the model, for models it cannot serve."""
    diffusion_model = model.model.diffusion_model
    if is_unet(diffusion_model):
        return "unet", unet_layers(diffusion_model)
    family = dit_family(diffusion_model)
    if family is not None:
        return family.key, dit_layers(diffusion_model, family)
    _LOG.warning("%s: %s (%s) is not a UNet nor a transformer this node serves: it needs the self-attention of a UNet (SD1.x, SD2.x, "
                 "SDXL) or of SD3/SD3.5, Flux-family (Flux.1, Chroma) or Qwen-Image. The model is returned unchanged, "
                 "at no cost.", node_name, type(model.model).__name__, type(diffusion_model).__name__)
    return None


def method_key(model, name):
    return routing.method_key(model.model_options, name)


def warn_once(ctx, message):
    routing.warn_once(ctx, message, _LOG)


def diffusers_timestep(args):
    """A post-CFG call's timestep on diffusers' 0-1000 scale (flow models: 1000 sigma, as diffusers'
    SD3 and Flux pipelines; ComfyUI's Flux sampling would give sigma itself)."""
    sampling = args["model"].model_sampling
    if isinstance(sampling, comfy.model_sampling.CONST):
        return args["sigma"] * 1000.0
    return sampling.timestep(args["sigma"])
