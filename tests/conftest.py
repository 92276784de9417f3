"""Import the pack as the package `attnguide`, whatever its folder is called, the way
ComfyUI imports it (a package with relative imports inside)."""
import importlib.util
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
# The helpers (tests/support) import by module name, and so do test modules that share another's
# fixtures or builders across folders (e.g. every Forge method test runs test_forge_sag_pag's run),
# whichever folders a run selects; module basenames are unique across tests/.
sys.path[:0] = [str(TESTS / "support")] + sorted(str(folder) for folder in TESTS.iterdir()
                                                  if folder.is_dir() and any(folder.glob("test_*.py")))
torch.set_num_threads(1)


def _load_pack():
    if "attnguide" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("attnguide", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["attnguide"] = module
    spec.loader.exec_module(module)


_load_pack()


# Fixtures of the real-ComfyUI tests; they skip when COMFYUI_PATH is unset.
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def comfy():
    import comfy_host
    return comfy_host.require_comfy()


@pytest.fixture(scope="session", params=["sd1", "sdxl"])
def model(request, comfy):
    import comfy_host
    return {"sd1": comfy_host.tiny_sd1, "sdxl": comfy_host.tiny_sdxl}[request.param]()


@pytest.fixture(scope="session")
def sd1(comfy):
    import comfy_host
    return comfy_host.tiny_sd1()
