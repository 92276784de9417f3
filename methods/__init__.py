"""Every method's parameters, once (methods/spec.py): the hosts' adapters build their inputs from these."""
from . import attend_excite, pag, panorama, pix2pix_zero, sag, sega
from .spec import MethodSpec, Param

__all__ = ["METHODS", "MethodSpec", "Param"]

METHODS = {m.SPEC.key: m.SPEC for m in (sag, pag, sega, attend_excite, panorama, pix2pix_zero)}
