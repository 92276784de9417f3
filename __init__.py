"""attnguide: attention-level guidance methods for ComfyUI (and A1111/Forge via scripts/).

ComfyUI loads this file and calls comfy_entrypoint(); nothing here imports the host
at import time, so the core (attention/, guidance/) also imports outside any host.
"""
import importlib.util
import logging
import sys

MIN_COMFYUI = "0.3.47"

if "comfy" in sys.modules and importlib.util.find_spec("comfy_api") is None:
    logging.getLogger("attnguide").error(
        "attnguide needs ComfyUI %s or newer (V3 node API); this ComfyUI is too old, so no attnguide nodes load. "
        "Update ComfyUI.", MIN_COMFYUI)


async def comfy_entrypoint():
    from .nodes import AttnGuideExtension
    return AttnGuideExtension()
