"""Which WebUI runs the pack, and its Forge/reForge backend; asked when a method is applied."""
import importlib
import importlib.util


def host():
    """'forge' (backend.* patchers), 'reforge' (ldm_patched.*, also old Forge), or 'a1111'."""
    if importlib.util.find_spec("backend") is not None and importlib.util.find_spec("backend.patcher") is not None:
        return "forge"
    if importlib.util.find_spec("ldm_patched") is not None:
        return "reforge"
    return "a1111"


def load_forge_backend():
    """The module forge.backend (apply(method, unet_patcher, params) -> unet_patcher), or None
    while this copy of the pack has none. Looked up by name, so a stand-in in sys.modules serves."""
    name = f"{__package__}.forge.backend"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        return None
