"""The real Forge WebUI (FORGE_WEBUI_PATH) and/or reForge (REFORGE_WEBUI_PATH), one server per host
and session, started by tests/support/webui_server.py. tests/forge_webui/setup_forge.sh prepares a host.

Environment (per host, FORGE_WEBUI_* or REFORGE_WEBUI_*; see webui_server.py):
  *_PATH        the webui folder (launch.py, modules/, backend/ or ldm_patched/); the tests skip without it
  *_PYTHON      its venv's python (default: <PATH>/../venv/bin/python)
  *_PYTHONPATH  prepended to PYTHONPATH (default: <PATH>/../shim, the cpu-shim copy setup_forge.sh makes)
  *_CKPT        the checkpoint (default: <PATH>/models/Stable-diffusion/tiny.safetensors)
"""
import pytest

from webui_server import Host, WebUIServer

FLAGS = ("--skip-python-version-check", "--always-cpu")
# live previews off: reForge's default ("Approx NN") downloads its weights at the first generation
HOSTS = {name: Host(name=name, env=env, folder=f"a {name} webui folder", made_by="tests/forge_webui/setup_forge.sh",
                    flags=FLAGS, live_previews=False)
         for name, env in (("forge", "FORGE_WEBUI"), ("reforge", "REFORGE_WEBUI"))}


@pytest.fixture(scope="session", params=sorted(HOSTS))
def webui(request):
    server = WebUIServer(HOSTS[request.param]).start()
    print(f"\n{request.param}: {server.snapshot}")
    try:
        yield server
    finally:
        server.stop()
