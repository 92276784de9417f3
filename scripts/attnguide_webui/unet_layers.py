"""A WebUI method built on the pass's UNet (A1111 and Forge serve UNets): its Target and its build, with the
WebUI's messages."""
from ...attention.layers import LayerSelectionError, is_unet, unet_layers
from ...methods.build import Target


def unet_target(key, unet, title, not_served=ValueError):
    """The Target (methods/build.py) of method `key` on `unet`; not_served(message) when it is not a UNet."""
    if not is_unet(unet):
        raise not_served(f"{title}: {type(unet).__name__} is not a UNet model; this method needs the self-attention "
                         "of a UNet (SD1.x, SD2.x, SDXL).")
    return Target(key, "unet", tuple(unet_layers(unet)))


def build_on(target, spec, build, params):
    """build(target, **params), a bad layer selection told as the method's ValueError."""
    try:
        return build(target, **spec.values(params))
    except LayerSelectionError as e:
        raise ValueError(f"{spec.title}: {e}") from None
