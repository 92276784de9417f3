"""A real A1111-family WebUI (A1111, Forge, reForge) started headless on the CPU with this checkout of
the pack as an extension, driven through its HTTP API. Nothing of the host lives in this repository:
the host folder and its venv come from the environment, per host (a Host names its variables):

  <ENV>_PATH        the webui folder (launch.py, modules/, ...); the tests skip without it
  <ENV>_PYTHON      its venv's python (default: <PATH>/../venv/bin/python)
  <ENV>_PYTHONPATH  prepended to PYTHONPATH (default: <PATH>/../shim when it exists: the cpu-shim copy
                    the set-up scripts put there)
  <ENV>_CKPT        the checkpoint (default: <PATH>/models/Stable-diffusion/tiny.safetensors)

ENV is A1111 for A1111 (tests/support/a1111_host.py), FORGE_WEBUI / REFORGE_WEBUI for Forge and reForge
(tests/forge_webui/conftest.py).

Each server gets its own --data-dir in a temporary folder: extensions/attnguide is a fresh copy of this
checkout, so the tests always run the code under test (ATTNGUIDE_WEBUI_PACK: another checkout of the pack to
install instead, e.g. an older commit, to see a test fail on it), beside it the host's test-only extensions;
the host's config, outputs and caches land there too.
"""
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", ".pytest_cache", "*.pyc")
# every host: no installs, no downloads, no hashing of the checkpoint
COMMON_FLAGS = ["--skip-prepare-environment", "--skip-install", "--skip-torch-cuda-test", "--skip-version-check",
                "--no-hashing", "--no-download-sd-model"]


@dataclass(frozen=True)
class Host:
    """What differs between the hosts: their environment variables, launch flags and set-up."""
    name: str                # in messages: "A1111", "forge", "reforge"
    env: str                 # the prefix of its environment variables: "A1111", "FORGE_WEBUI"
    folder: str              # what <env>_PATH must be, for the skip reason
    made_by: str             # what makes such a folder, for the skip reason
    flags: tuple             # launch flags besides COMMON_FLAGS
    extensions: dict = field(default_factory=dict)  # {folder name: source folder}: test-only extensions
    live_previews: bool = True  # False: switched off after start (reForge's downloads its weights)
    start_timeout: int = 420

    def skip_reason(self):
        return (f"{self.env}_PATH is not set: point it at {self.folder} ({self.made_by} makes one) "
                f"to run the real {self.name} WebUI tests")

    def webui(self):
        """The webui folder; the test skips when the variable is unset."""
        path = os.environ.get(f"{self.env}_PATH")
        if not path:
            pytest.skip(self.skip_reason())
        webui = Path(path)
        if not (webui / "launch.py").is_file():
            pytest.fail(f"{self.env}_PATH={path} has no launch.py")
        return webui

    def python(self, webui):
        python = Path(os.environ.get(f"{self.env}_PYTHON") or webui.parent / "venv" / "bin" / "python")
        if not python.exists():
            pytest.fail(f"no python for {self.name} at {python}: set {self.env}_PYTHON to its venv's python")
        return python

    def checkpoint(self, webui):
        return os.environ.get(f"{self.env}_CKPT") or str(webui / "models" / "Stable-diffusion" / "tiny.safetensors")

    def environment(self, webui):
        """The environment the host's python runs in: one thread unless told, no analytics, the shims first."""
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), GRADIO_ANALYTICS_ENABLED="False")
        shim = os.environ.get(f"{self.env}_PYTHONPATH") or (str(webui.parent / "shim") if (webui.parent / "shim").is_dir() else "")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (shim, os.environ.get("PYTHONPATH", "")) if p)
        return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot_of(webui):
    """'<commit> <date> <subject>' of the host (the set-up script's .snapshot line, or git)."""
    snapshot = Path(webui) / ".snapshot"
    if snapshot.is_file():
        return snapshot.read_text().strip()
    out = subprocess.run(["git", "-C", str(webui), "log", "-1", "--format=%H %cs %s"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


class WebUIServer:
    """One WebUI process: `python launch.py <flags> --api --port <free> --data-dir <tmp>`; ui=False adds
    `--nowebui` (API only), ui=True builds the gradio UI too and `--api` adds the API to it."""

    def __init__(self, host, ui=False):
        self.host, self.ui = host, ui
        self.webui = host.webui()
        self.python = host.python(self.webui)
        self.snapshot = snapshot_of(self.webui)
        self.commit = self.snapshot.split()[0]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = Path(tempfile.mkdtemp(prefix=f"attnguide-{host.name.lower()}-"))
        pack = Path(os.environ.get("ATTNGUIDE_WEBUI_PACK") or ROOT)
        shutil.copytree(pack, self.data / "extensions" / "attnguide", ignore=COPY_IGNORE)
        for name, source in host.extensions.items():
            shutil.copytree(source, self.data / "extensions" / name, ignore=COPY_IGNORE)
        self.log_path = self.data / "server.log"
        self.process = None

    def command(self):
        args = [str(self.python), "launch.py", *COMMON_FLAGS, *self.host.flags, "--ckpt", self.host.checkpoint(self.webui),
                "--api", "--server-name", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data)]
        return args if self.ui else args + ["--nowebui"]

    def start(self):
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command(), cwd=self.webui, env=self.host.environment(self.webui),
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.host.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.host.name} exited with {self.process.returncode} while starting:\n{self.log_tail()}")
            try:
                self.get("/sdapi/v1/samplers", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1)
        else:
            self.stop()
            raise RuntimeError(f"{self.host.name} did not answer within {self.host.start_timeout} s:\n{self.log_tail()}")
        if not self.host.live_previews:
            self.post("/sdapi/v1/options", {"live_previews_enable": False})
        return self

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.data, ignore_errors=True)

    def log_text(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars=6000):
        return "\n".join(l for l in self.log_text().splitlines() if not l.startswith("WARNING: Location"))[-chars:]

    def get(self, path, timeout=60):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def post(self, path, body=None, timeout=900):
        """The JSON of a 200 answer; anything else raises with the body and the server's log tail."""
        request = urllib.request.Request(self.url + path, data=json.dumps(body or {}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                assert r.status == 200, f"POST {path}: HTTP {r.status}"
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path}: HTTP {e.code}: {e.read()[:4000].decode(errors='replace')}\n"
                                 f"{self.log_tail(3000)}") from None

    def rss_bytes(self):
        """Resident memory of the server process (the python that launch.py runs in)."""
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0
