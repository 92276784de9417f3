"""What the pack's ComfyUI machinery shares: model checks, method keys, one warning per run."""
import logging

from ..attention.layers import LayerSelectionError, is_unet, parse_layers, unet_layers
from ..attention.router import ROUTER_KEY

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


def select_layers(text, layers, input_name):
    try:
        return parse_layers(text, layers, input_name)
    except LayerSelectionError as e:
        raise ValueError(str(e)) from None


def method_key(model, name):
    router = model.model_options.get("transformer_options", {}).get(ROUTER_KEY)
    return f"{name}.{len(router.methods) if router else 0}"


def warn_once(ctx, message):
    """Log `message` once per generation (every time where the host keeps no run state)."""
    seen = ctx.run.setdefault("warned", set()) if ctx.run is not None else set()
    if message not in seen:
        seen.add(message)
        _LOG.warning(message)
