"""Import the pack as the package `attnguide`, whatever its folder is called, the way
ComfyUI imports it (a package with relative imports inside)."""
import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
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


# Fixtures of the real-host tests (tests/comfy); they skip when COMFYUI_PATH is unset.
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
