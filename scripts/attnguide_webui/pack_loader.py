"""Run by each scripts/attnguide_<method>.py (runpy, by path: the pack folder may have any
name, so it is not importable by name). Loads the pack root as the package `attnguide`, as
ComfyUI does, once per process; returns the WebUI layer with the method's X/Y/Z axes added."""
import importlib
import importlib.util
import sys
from pathlib import Path


def load(method):
    if "attnguide" not in sys.modules:
        root = Path(__file__).resolve().parents[2]
        spec = importlib.util.spec_from_file_location("attnguide", root / "__init__.py",
                                                      submodule_search_locations=[str(root)])
        sys.modules["attnguide"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    webui = importlib.import_module("attnguide.scripts.attnguide_webui")
    webui.register_axes(method)
    return webui
