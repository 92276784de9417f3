"""Pix2Pix-Zero (AttnGuide) as an always-on section of the A1111 / Forge / reForge img2img tab (hidden in txt2img:
it edits an init image).

The Script's behaviour lives in scripts/attnguide_webui/.
"""
import runpy
from pathlib import Path

from modules import scripts

webui = runpy.run_path(str(Path(__file__).with_name("attnguide_webui") / "pack_loader.py"))["load"]("pix2pix_zero")


class AttnGuidePix2PixZero(webui.MethodScript, scripts.Script):
    spec = webui.METHODS["pix2pix_zero"]

    def show(self, is_img2img):
        return scripts.AlwaysVisible if is_img2img else False
