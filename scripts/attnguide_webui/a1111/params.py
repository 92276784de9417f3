"""Parameters of the plain-A1111 methods: the layers a method names, checked against the pass's UNet."""
from ....attention.layers import LayerSelectionError, is_unet, parse_layers, unet_layers
from ..errors import NotServed


def layers_of(session, text, name, title, auto):
    unet = session.unet
    if not is_unet(unet):
        raise NotServed(f"{title}: {type(unet).__name__} is not a UNet; this method needs the self-attention of a UNet "
                        "(SD1.x, SD2.x, SDXL).")
    try:
        return parse_layers(text, unet_layers(unet), name, auto)
    except LayerSelectionError as e:
        raise ValueError(f"{title}: {e}") from None
