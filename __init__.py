"""attnguide: attention-level guidance methods for ComfyUI (and A1111/Forge via scripts/).

ComfyUI loads this file and calls comfy_entrypoint(); nothing here imports the host
at import time, so the core (attention/, guidance/) also imports outside any host.
"""
import logging
import sys

# The oldest ComfyUI the host tests pass on. It needs the V3 node API (0.3.48), the PREDICT_NOISE
# sampler wrapper (0.3.52) and the attention override (0.3.60): on 0.3.52-0.3.59 the attn1 replace
# fallback breaks stacking with ComfyUI's own SAG and PAG.
MIN_COMFYUI = "0.3.60"


def comfyui_too_old(version):
    """True for a ComfyUI version string ("0.3.59", "v0.33.0") older than MIN_COMFYUI."""
    parse = lambda v: tuple(int(p) for p in v.strip().lstrip("v").split(".")[:3])
    return parse(version) < parse(MIN_COMFYUI)


def _host_version():
    """The running ComfyUI's version (its comfyui_version module), or None outside ComfyUI."""
    if "comfy" not in sys.modules:
        return None
    try:
        from comfyui_version import __version__
    except ImportError:
        return "0.0.0"  # older than comfyui_version.py
    return __version__


HOST_VERSION = _host_version()
HOST_TOO_OLD = HOST_VERSION is not None and comfyui_too_old(HOST_VERSION)
if HOST_TOO_OLD:
    logging.getLogger("attnguide").error(
        "attnguide needs ComfyUI %s or newer; this is ComfyUI %s, so no attnguide nodes load. Update ComfyUI.",
        MIN_COMFYUI, HOST_VERSION)


async def comfy_entrypoint():
    from .nodes import AttnGuideExtension
    return AttnGuideExtension()
