"""Pix2Pix-Zero (AttnGuide) as an always-on section of the A1111 / Forge / reForge img2img tab (hidden in txt2img:
it edits an init image).

The pack root is loaded as the package `attnguide` (as ComfyUI loads it); the Script's
behaviour lives in scripts/attnguide_webui/.
"""
import importlib
import importlib.util
import sys
from pathlib import Path

from modules import scripts


def _webui():
    if "attnguide" not in sys.modules:
        root = Path(__file__).resolve().parents[1]
        spec = importlib.util.spec_from_file_location("attnguide", root / "__init__.py",
                                                      submodule_search_locations=[str(root)])
        sys.modules["attnguide"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return importlib.import_module("attnguide.scripts.attnguide_webui")


webui = _webui()
webui.register_axes("pix2pix_zero")


class AttnGuidePix2PixZero(webui.MethodScript, scripts.Script):
    spec = webui.METHODS["pix2pix_zero"]

    def show(self, is_img2img):
        return scripts.AlwaysVisible if is_img2img else False
