"""Perturbed-Attention Guidance on a Forge/reForge patcher (the ComfyUI node's behaviour, nodes/pag.py).
The perturbed rows run in the same UNet call as cond/uncond."""
from ....methods.pag import SPEC, build
from .params import apply_built


def apply_pag(patcher, sigmas=None, **params):
    return apply_built(patcher, SPEC, build, params, sigmas)
