"""The real Forge WebUI (FORGE_WEBUI_PATH) and/or reForge (REFORGE_WEBUI_PATH), one server per host
and session, started by tests/support/webui_server.py. tests/forge_webui/setup_forge.sh prepares a host.

Environment (per host, FORGE_WEBUI_* or REFORGE_WEBUI_*):
  *_PATH        the webui folder (launch.py, modules/, backend/ or ldm_patched/); the tests skip without it
  *_PYTHON      its venv's python (default: <PATH>/../venv/bin/python)
  *_PYTHONPATH  prepended to PYTHONPATH (default: <PATH>/../shim, the cpu-shim copy setup_forge.sh makes)
  *_CKPT        the checkpoint (default: <PATH>/models/Stable-diffusion/tiny.safetensors)
"""
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

HOSTS = {"forge": "FORGE_WEBUI", "reforge": "REFORGE_WEBUI"}
FLAGS = ["--skip-prepare-environment", "--skip-install", "--skip-torch-cuda-test", "--skip-version-check",
         "--skip-python-version-check", "--always-cpu", "--no-hashing", "--no-download-sd-model"]


def _server(host):
    from webui_server import WebUIServer
    prefix = HOSTS[host]
    path = os.environ.get(f"{prefix}_PATH")
    if not path:
        pytest.skip(f"{prefix}_PATH is not set: point it at a {host} webui folder (tests/forge_webui/setup_forge.sh "
                    f"makes one) to run the real {host} WebUI tests")
    webui = Path(path)
    if not (webui / "launch.py").is_file():
        pytest.fail(f"{prefix}_PATH={path} has no launch.py")
    python = Path(os.environ.get(f"{prefix}_PYTHON") or webui.parent / "venv" / "bin" / "python")
    if not python.exists():
        pytest.fail(f"no python for {host} at {python}: set {prefix}_PYTHON to its venv's python")
    shim = os.environ.get(f"{prefix}_PYTHONPATH") or (str(webui.parent / "shim") if (webui.parent / "shim").is_dir() else "")
    ckpt = os.environ.get(f"{prefix}_CKPT") or str(webui / "models" / "Stable-diffusion" / "tiny.safetensors")
    return WebUIServer(webui, python, FLAGS + ["--ckpt", ckpt], pythonpath=shim, name=host)


@pytest.fixture(scope="session", params=sorted(HOSTS))
def webui(request):
    server = _server(request.param).start()
    print(f"\n{request.param}: {server.snapshot}")
    # reForge's default live preview ("Approx NN") downloads its weights at the first generation
    status, answer = server.post("/sdapi/v1/options", {"live_previews_enable": False})
    assert status == 200, answer
    try:
        yield server
    finally:
        server.stop()
