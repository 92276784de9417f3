"""The oldest ComfyUI the pack claims: one number in the pack, pyproject.toml and the README, and
the check that keeps the nodes from loading on an older ComfyUI."""
import re
from pathlib import Path

import attnguide

ROOT = Path(__file__).resolve().parents[2]


def test_version_check_compares_numbers():
    assert attnguide.MIN_COMFYUI == "0.3.60"
    for older in ("0.3.47", "0.3.52", "0.3.59", "v0.3.59", "0.2.99"):
        assert attnguide.comfyui_too_old(older), older
    for newer in ("0.3.60", "0.3.64", "v0.3.100", "0.4.0", "0.33.0"):
        assert not attnguide.comfyui_too_old(newer), newer


def test_one_claim_everywhere():
    pyproject = re.search(r'requires-comfyui = ">=([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    readme = re.search(r"\*\*ComfyUI\*\* \(([\d.]+) or newer\)", (ROOT / "README.md").read_text()).group(1)
    assert pyproject == readme == attnguide.MIN_COMFYUI
