"""The pack's WebUI layer (A1111, Forge, reForge), shared by the scripts/attnguide_<method>.py
entry files; loaded as attnguide.scripts.attnguide_webui, so it reaches the core through
relative imports. a1111/ and forge/ hold each host's methods and machinery; the modules here
serve both. Nothing here imports the host at import time."""
from ...methods import METHODS
from .script import MethodScript
from .which_host import host, load_forge_backend
from .xyz import register_axes

__all__ = ["METHODS", "MethodScript", "register_axes", "host", "load_forge_backend"]
