"""Forge's requests (tests/support/webui_payloads.py for the rest): its samplers take a scheduler, and the
panorama runs its windows two at a time (a batch of 2 images in 2-window batches is a case of its own)."""
from webui_payloads import BASE, SETTINGS, Requests

FORGE_BASE = {**BASE, "scheduler": "Automatic"}
FORGE_SETTINGS = {**SETTINGS, "panorama": {**SETTINGS["panorama"], "window_batch": 2}}

request = Requests(FORGE_BASE, FORGE_SETTINGS)
