"""The real Automatic1111 WebUI as tests/support/webui_server.py starts it: A1111_PATH (its webui folder,
v1.10.1 as ../shared/tools/a1111-checkout.sh prepares it), A1111_PYTHON, A1111_PYTHONPATH, A1111_CKPT
(see there), on the CPU in full precision, with the test-only seed_extension beside the pack
(img2img made reproducible, see there)."""
from pathlib import Path

from webui_server import Host, WebUIServer

A1111 = Host(name="A1111", env="A1111", folder="an A1111 v1.10.1 webui folder",
             made_by="../shared/tools/a1111-checkout.sh",
             flags=("--use-cpu", "all", "--no-half", "--precision", "full", "--do-not-download-clip"),
             extensions={"attnguide-tests-seed": Path(__file__).resolve().parent / "seed_extension"},
             start_timeout=300)


def server(ui=False):
    """An A1111 server, not yet started: ui=False API only (`--nowebui`), ui=True with the gradio UI."""
    return WebUIServer(A1111, ui=ui)
