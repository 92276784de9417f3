"""A real A1111-family WebUI (A1111, Forge, reForge) started headless on the CPU, API only, with this
checkout of the pack as an extension, driven through its HTTP API. Nothing of the host lives in this
repository: the host folder and its venv come from the environment (see tests/forge_webui/setup_forge.sh).

Each server gets its own --data-dir in a temporary folder: extensions/attnguide is a fresh copy of this
checkout, so the tests always run the code under test (ATTNGUIDE_WEBUI_PACK: another checkout of the pack to
install instead, e.g. an older commit, to see a test fail on it); the host's config, outputs and caches land
there too.
"""
import base64
import hashlib
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

ROOT = Path(__file__).resolve().parents[2]
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", ".pytest_cache", "*.pyc")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot_of(webui):
    """'<commit> <date> <subject>' of the host (the setup script's .snapshot line, or git)."""
    snapshot = Path(webui) / ".snapshot"
    if snapshot.is_file():
        return snapshot.read_text().strip()
    out = subprocess.run(["git", "-C", str(webui), "log", "-1", "--format=%H %cs %s"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


class WebUIServer:
    """One WebUI process: `python launch.py <args> --api --nowebui --port <free> --data-dir <tmp>`."""

    def __init__(self, webui, python, args, pythonpath="", start_timeout=420, name="WebUI"):
        self.webui, self.python, self.args = Path(webui), Path(python), list(args)
        self.pythonpath, self.start_timeout, self.name = pythonpath, start_timeout, name
        self.snapshot = snapshot_of(webui)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = Path(tempfile.mkdtemp(prefix="attnguide-webui-"))
        pack = Path(os.environ.get("ATTNGUIDE_WEBUI_PACK") or ROOT)
        shutil.copytree(pack, self.data / "extensions" / "attnguide", ignore=COPY_IGNORE)
        self.log_path = self.data / "server.log"
        self.process = None

    def command(self):
        return [str(self.python), "launch.py", *self.args, "--api", "--nowebui", "--server-name", "127.0.0.1",
                "--port", str(self.port), "--data-dir", str(self.data)]

    def environment(self):
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), GRADIO_ANALYTICS_ENABLED="False")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (self.pythonpath, os.environ.get("PYTHONPATH", "")) if p)
        return env

    def start(self):
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command(), cwd=self.webui, env=self.environment(), stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} while starting:\n{self.log_tail()}")
            try:
                self.get("/sdapi/v1/samplers", timeout=5)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {self.start_timeout} s:\n{self.log_tail()}")

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
        """(HTTP status, JSON answer)."""
        request = urllib.request.Request(self.url + path, data=json.dumps(body or {}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, {"error": e.read()[:4000].decode(errors="replace")}


class Pixels(bytes):
    """Raw RGB bytes that print as a short digest in assertion messages."""

    def __repr__(self):
        return f"<image {hashlib.sha256(self).hexdigest()[:12]}, {len(self)} bytes>"


def pixels(image_b64):
    """An answer's image as raw RGB bytes (the PNG's text chunks, which hold the infotext, left out)."""
    from PIL import Image
    with Image.open(io.BytesIO(base64.b64decode(image_b64.split(",", 1)[-1]))) as image:
        return Pixels(image.convert("RGB").tobytes())


def info(answer):
    """The `info` of a txt2img / img2img answer, parsed (the WebUI sends it as a JSON string)."""
    return json.loads(answer["info"])
