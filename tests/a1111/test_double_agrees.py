"""The A1111 double (tests/support/a1111_double.py) against the real A1111 (A1111_PATH) on what it
stands in for that the real-server tests cannot see from outside. Its samplers: A1111 keeps the
timestep samplers' function itself as `funcname` (a str for k-diffusion); a double that gave a
str for DDIM hid the bug that Attend-and-Excite never ran with DDIM."""
import json
import subprocess
from pathlib import Path

from a1111_host import A1111
import a1111_double as a1


def real_samplers():
    webui = A1111.webui()
    out = subprocess.run([str(A1111.python(webui)), str(Path(__file__).resolve().parents[1] / "support" / "sampler_probe.py")],
                         cwd=webui, env=A1111.environment(webui), capture_output=True, text=True, timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.startswith("PROBE ")]
    assert out.returncode == 0 and lines, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(lines[-1][len("PROBE "):])


def test_double_samplers_are_the_real_ones():
    real = real_samplers()
    for label, (kind, funcname) in a1.SAMPLERS.items():
        assert label in real, label
        double = {"kind": kind, "str": isinstance(funcname, str),
                  "name": funcname if isinstance(funcname, str) else funcname.__name__}
        assert double == real[label], (label, double, real[label])
    assert {"Euler", "Euler a", "DPM++ 2M", "DDIM", "PLMS", "UniPC"} <= set(real)
