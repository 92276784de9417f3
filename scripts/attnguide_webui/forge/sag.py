"""Self-Attention Guidance on a Forge/reForge patcher (the ComfyUI node's behaviour, nodes/sag.py)."""
from ....methods.sag import SPEC, build
from .params import apply_built


def apply_sag(patcher, sigmas=None, **params):
    return apply_built(patcher, SPEC, build, params, sigmas)
