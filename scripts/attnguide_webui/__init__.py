"""The pack's WebUI layer (A1111, Forge, reForge), shared by the scripts/attnguide_<method>.py
entry files; loaded as attnguide.scripts.attnguide_webui, so it reaches the core through
relative imports. Nothing here imports the host at import time."""
import importlib
import importlib.util

from ...methods import METHODS
from .script import MethodScript
from .xyz import register_axes

__all__ = ["METHODS", "MethodScript", "register_axes", "host", "load_forge_backend"]


def host():
    """'forge' (backend.* patchers), 'reforge' (ldm_patched.*, also old Forge), or 'a1111'."""
    if importlib.util.find_spec("backend") is not None and importlib.util.find_spec("backend.patcher") is not None:
        return "forge"
    if importlib.util.find_spec("ldm_patched") is not None:
        return "reforge"
    return "a1111"


def load_forge_backend():
    """The module forge_backend (apply(method, unet_patcher, params) -> unet_patcher), or None
    while this copy of the pack has none."""
    try:
        return importlib.import_module(f"{__name__}.forge_backend")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.forge_backend":
            raise
        return None
