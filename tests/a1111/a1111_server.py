"""A real Automatic1111 WebUI (A1111_PATH: its webui folder, v1.10.1 as
../shared/tools/a1111-checkout.sh prepares it) started headless on the CPU with this checkout
of the pack as its only extra extension, driven through its HTTP API. Nothing of A1111 lives
in this repository.

Environment:
  A1111_PATH        the webui folder (launch.py, modules/, ...); the tests skip without it
  A1111_PYTHON      its venv's python (default: <A1111_PATH>/../venv/bin/python)
  A1111_PYTHONPATH  prepended to PYTHONPATH (default: <A1111_PATH>/../shim when it exists: the
                    cpu-shim copy the checkout script puts there)
  A1111_CKPT        the checkpoint (default: <A1111_PATH>/models/Stable-diffusion/tiny.safetensors,
                    with its tiny.yaml beside it)

Each server gets its own --data-dir in a temporary folder: extensions/attnguide is a fresh
copy of this checkout (so the tests always run the code under test, never a stale copy in
the webui folder), extensions/attnguide-tests-seed the test-only seed_extension (img2img made
reproducible, see there), and A1111's config, outputs and caches land there too.
"""
import base64
import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
A1111_PATH = os.environ.get("A1111_PATH")
SKIP_REASON = ("A1111_PATH is not set: point it at an A1111 v1.10.1 webui folder (../shared/tools/a1111-checkout.sh "
               "makes one) to run the real-A1111 tests")
START_TIMEOUT = 300
# what the copy of the pack leaves out: the repository's own state, virtual environments, caches
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", ".pytest_cache", "*.pyc")


def require_a1111():
    if not A1111_PATH:
        pytest.skip(SKIP_REASON)
    webui = Path(A1111_PATH)
    if not (webui / "launch.py").is_file():
        pytest.fail(f"A1111_PATH={A1111_PATH} has no launch.py")
    return webui


def python_of(webui):
    python = Path(os.environ.get("A1111_PYTHON") or webui.parent / "venv" / "bin" / "python")
    if not python.exists():
        pytest.fail(f"no python for A1111 at {python}: set A1111_PYTHON to its venv's python")
    return python


def commit_of(webui):
    """The A1111 commit (the checkout script's .snapshot line, or git)."""
    snapshot = webui / ".snapshot"
    if snapshot.is_file():
        return snapshot.read_text().split()[0]
    out = subprocess.run(["git", "-C", str(webui), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def environment(webui):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), GRADIO_ANALYTICS_ENABLED="False")
    shim = os.environ.get("A1111_PYTHONPATH") or (str(webui.parent / "shim") if (webui.parent / "shim").is_dir() else "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (shim, os.environ.get("PYTHONPATH", "")) if p)
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One A1111 process. ui=False: `--api --nowebui` (API only); ui=True: the gradio UI is built
    too and `--api` adds the API to it."""

    def __init__(self, ui=False):
        self.webui = require_a1111()
        self.ui = ui
        self.commit = commit_of(self.webui)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = Path(tempfile.mkdtemp(prefix="attnguide-a1111-"))
        shutil.copytree(ROOT, self.data / "extensions" / "attnguide", ignore=COPY_IGNORE)
        shutil.copytree(HERE / "seed_extension", self.data / "extensions" / "attnguide-tests-seed", ignore=COPY_IGNORE)
        self.log_path = self.data / "server.log"
        self.process = None

    def command(self):
        ckpt = os.environ.get("A1111_CKPT") or str(self.webui / "models" / "Stable-diffusion" / "tiny.safetensors")
        args = [str(python_of(self.webui)), "launch.py", "--skip-prepare-environment", "--skip-install",
                "--skip-torch-cuda-test", "--skip-version-check", "--use-cpu", "all", "--no-half", "--precision", "full",
                "--api", "--server-name", "127.0.0.1", "--port", str(self.port), "--ckpt", ckpt, "--no-hashing",
                "--no-download-sd-model", "--do-not-download-clip", "--data-dir", str(self.data)]
        return args if self.ui else args + ["--nowebui"]

    def start(self):
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command(), cwd=self.webui, env=environment(self.webui), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"A1111 exited with {self.process.returncode} while starting:\n{self.log_tail()}")
            try:
                self.get("/sdapi/v1/samplers", timeout=5)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"A1111 did not answer within {START_TIMEOUT} s:\n{self.log_tail()}")

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
        """The JSON of a 200 answer; anything else raises with the body."""
        request = urllib.request.Request(self.url + path, data=json.dumps(body or {}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                assert r.status == 200
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path}: HTTP {e.code}: {e.read()[:2000]!r}") from None

    def rss_bytes(self):
        """Resident memory of the server process (the python that launch.py runs in)."""
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


def pixels(image_b64):
    """An answer's image as raw RGB bytes (its PNG text chunks, which hold the infotext, left out)."""
    from PIL import Image
    with Image.open(io.BytesIO(base64.b64decode(image_b64.split(",", 1)[-1]))) as image:
        return image.convert("RGB").tobytes()


def info(answer):
    """The `info` of a txt2img / img2img answer, parsed (A1111 sends it as a JSON string)."""
    return json.loads(answer["info"])
