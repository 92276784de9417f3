"""The pack's core (attention/, guidance/) for the demo, whichever way the demo was imported.

`python -m demo` from the repo root makes `demo` a top-level package, but the core uses
relative imports inside the package `attnguide`; so the repo root is loaded as `attnguide`
(the way ComfyUI and tests/conftest.py load it) unless it already is.
"""
import importlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _package():
    if __package__ and __package__.count("."):
        return __package__.rsplit(".", 1)[0]  # imported as <pack>.demo
    if "attnguide" not in sys.modules:
        spec = importlib.util.spec_from_file_location("attnguide", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["attnguide"] = module
        spec.loader.exec_module(module)
    return "attnguide"


PACK = _package()


def core(name):
    """A module of the pack's core, e.g. core("attention.router")."""
    return importlib.import_module(f"{PACK}.{name}")
