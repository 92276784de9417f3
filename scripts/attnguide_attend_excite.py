"""Attend-and-Excite (AttnGuide) as an always-on section of the A1111 / Forge / reForge tabs.

The Script's behaviour lives in scripts/attnguide_webui/.
"""
import runpy
from pathlib import Path

from modules import scripts

webui = runpy.run_path(str(Path(__file__).with_name("attnguide_webui") / "pack_loader.py"))["load"]("attend_excite")


class AttnGuideAttendAndExcite(webui.MethodScript, scripts.Script):
    spec = webui.METHODS["attend_excite"]
