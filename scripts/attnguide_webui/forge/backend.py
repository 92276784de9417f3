"""Forge / reForge backend of the WebUI scripts: apply(method, unet_patcher, params) -> a patched clone.

params are the ComfyUI node's execute() inputs (same names, same defaults; see params.py),
plus what only the WebUI knows: "sigmas" (the run's schedule; Forge puts none in the model
options) and, for methods that read text, "encode". The input patcher is never changed.
Use it in Script.process_before_every_sampling:
    unet = backend.apply("pag", p.sd_model.forge_objects.unet, {...})
    p.sd_model.forge_objects.unet = unet
"""
from .params import resolve
from .attend_excite import apply_attend_excite
from .pag import apply_pag
from .panorama import apply_panorama
from .pix2pix_zero import apply_pix2pix_zero
from .sag import apply_sag
from .sega import apply_sega

METHODS = ("sag", "pag", "sega", "attend_excite", "panorama", "pix2pix_zero")


APPLY = {"sag": apply_sag, "pag": apply_pag, "sega": apply_sega, "panorama": apply_panorama,
         "attend_excite": apply_attend_excite, "pix2pix_zero": apply_pix2pix_zero}


def apply(method, unet_patcher, params=None):
    """One signature for every method: the patcher and the node-keyed params (with the host's values)."""
    if method not in APPLY:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return APPLY[method](unet_patcher, **resolve(method, dict(params or {})))
