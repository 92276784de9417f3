"""A real ComfyUI server with its real frontend, for the browser tests.

The server is ComfyUI's own main.py (COMFYUI_PATH), run with this test's Python on the CPU, on
127.0.0.1 and a free port, with --base-directory a temporary folder that holds this pack as its only
custom node, the tiny checkpoint (TINY_CHECKPOINT) and the input images. The browser side runs in a
separate Python that has Playwright (BROWSER_PYTHON; tests/support/frontend_driver.py) and drives Chromium
(CHROMIUM, default: `chromium` on PATH).
"""
import ctypes
import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().parent / "frontend_driver.py"
HOW = "see README, 'Testing in the real ComfyUI frontend'"


def missing():
    """Why the browser tests cannot run here, or None."""
    comfy = os.environ.get("COMFYUI_PATH")
    if not comfy:
        return f"COMFYUI_PATH is not set: the frontend tests need a ComfyUI checkout ({HOW})"
    if not (Path(comfy) / "main.py").is_file():
        return f"COMFYUI_PATH={comfy} has no main.py"
    python = os.environ.get("BROWSER_PYTHON")
    if not python:
        return f"BROWSER_PYTHON is not set: a Python with Playwright drives the browser ({HOW})"
    if subprocess.run([python, "-c", "import playwright.sync_api"], capture_output=True).returncode:
        return f"BROWSER_PYTHON={python} cannot import playwright"
    if not chromium():
        return f"no Chromium: install chromium or set CHROMIUM to its executable ({HOW})"
    checkpoint = os.environ.get("TINY_CHECKPOINT")
    if not checkpoint or not Path(checkpoint).is_file():
        return f"TINY_CHECKPOINT is not set to an SD1.x checkpoint file ({HOW})"
    return None


def chromium():
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """`with ComfyServer(base) as server:` runs ComfyUI until the block ends. `base` is an empty folder."""

    def __init__(self, base, start_timeout=300):
        self.base = Path(base)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.checkpoint = Path(os.environ["TINY_CHECKPOINT"]).name
        self.start_timeout = start_timeout
        self.proc = None
        for sub in ("custom_nodes", "models/checkpoints", "input", "output", "temp", "user"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "custom_nodes" / "attnguide").symlink_to(ROOT, target_is_directory=True)
        (self.base / "models" / "checkpoints" / self.checkpoint).symlink_to(Path(os.environ["TINY_CHECKPOINT"]).resolve())
        self.log_path = self.base / "server.log"

    def __enter__(self):
        comfy = os.environ["COMFYUI_PATH"]
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--base-directory", str(self.base), "--disable-auto-launch", "--database-url", "sqlite:///:memory:"],
            cwd=comfy, env=env, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        deadline = time.time() + self.start_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"ComfyUI did not answer in {self.start_timeout}s:\n{self.log()}")

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self, tail=6000):
        return self.log_path.read_bytes()[-tail:].decode(errors="replace")

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path, body):
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"POST {path}: HTTP {e.code}: {e.read().decode(errors='replace')[:4000]}") from None

    def run(self, prompt, timeout):
        """Queue an API prompt; returns its history entry once ComfyUI has finished it (or failed)."""
        prompt_id = self.post("/prompt", {"prompt": prompt, "client_id": "attnguide-tests"})["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry:
                return entry
            if self.proc.poll() is not None:
                raise AssertionError(f"ComfyUI died:\n{self.log()}")
            time.sleep(1)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout}s:\n{self.log()}")


def _die_with_parent():
    """Linux: the server gets SIGTERM when the test process dies, even if it is killed."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def drive(url, workflows, screenshot=None, timeout=900):
    """Open the frontend at `url`, load each workflow and read it back (see frontend_driver.py)."""
    job = {"url": url, "chromium": chromium(), "workflows": workflows, "screenshot": screenshot}
    done = subprocess.run([os.environ["BROWSER_PYTHON"], str(DRIVER)], input=json.dumps(job), capture_output=True,
                          text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"frontend driver failed ({done.returncode}):\n{done.stderr[-6000:]}")
    return json.loads(done.stdout)


def screenshot(workflow, out, width=2200, height=1000):
    """A PNG of the workflow as the frontend draws it, framed to fill the picture, reduced to a palette."""
    import tempfile
    from PIL import Image
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory() as base, ComfyServer(base) as server:
        raw = Path(base) / "raw.png"
        job = {"workflow": workflow.name, "path": str(raw), "width": width, "height": height}
        drive(server.url, {workflow.name: json.loads(workflow.read_text())}, screenshot=job)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(raw).convert("RGB").quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="Picture of a workflow in the real ComfyUI frontend (same env as the tests)")
    ap.add_argument("--screenshot", required=True, help="output PNG")
    ap.add_argument("workflow", type=Path)
    ap.add_argument("--width", type=int, default=2200, help="browser window (the graph is fitted into it)")
    ap.add_argument("--height", type=int, default=1000)
    a = ap.parse_args()
    if missing():
        sys.exit(missing())
    path = screenshot(a.workflow, a.screenshot, a.width, a.height)
    print(f"{path}: {path.stat().st_size / 1024:.0f} KiB")
