"""The UNet layers a WebUI method names (A1111 and Forge serve UNets), checked against the model's."""
from ...attention.layers import LayerSelectionError, is_unet, parse_layers, unet_layers


def named_layers(unet, text, input_name, title, auto, not_served=ValueError):
    """parse_layers on `unet`; not_served(message) when it is not a UNet, ValueError for a bad selection."""
    if not is_unet(unet):
        raise not_served(f"{title}: {type(unet).__name__} is not a UNet model; this method needs the self-attention "
                         "of a UNet (SD1.x, SD2.x, SDXL).")
    try:
        return parse_layers(text, unet_layers(unet), input_name, auto)
    except LayerSelectionError as e:
        raise ValueError(f"{title}: {e}") from None
