"""Parameters of the plain-A1111 methods: the layers a method names, checked against the pass's UNet."""
from ..errors import NotServed
from ..unet_layers import named_layers


def layers_of(session, text, name, title, auto):
    return named_layers(session.unet, text, name, title, auto, NotServed)
