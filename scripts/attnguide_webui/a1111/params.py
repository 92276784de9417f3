"""Parameters of the plain-A1111 methods: the layers a method names, checked against the pass's UNet,
and what a method's build (methods/build.py) gives, put on the pass's Session."""
from ..errors import NotServed
from ..unet_layers import build_on, unet_target


def install_built(session, spec, build, params):
    target = unet_target(session.method_key(spec.key), session.unet, spec.title, NotServed)
    built = build_on(target, spec, build, params)
    if built.method is not None:
        session.add(built.method, built.post_cfg)
