"""Install missing runtime dependencies of attnguide. Never installs or upgrades torch.

Run by ComfyUI-Manager (`python install.py`, cwd = pack root) and by A1111/Forge (with
the webui's `launch` module importable; its `run_pip` is used there). The hosts already
ship everything in requirements.txt, so normally this finds nothing to do and does nothing.
"""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = (Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()) / "requirements.txt"
NEVER_INSTALL = {"torch", "torchvision", "torchaudio"}
IMPORT_NAMES = {"pillow": "PIL"}


def requirements(path=REQUIREMENTS):
    """(distribution name, requirement line) for every line but torch & co."""
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        name = re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0]
        if name and name.lower() not in NEVER_INSTALL:
            out.append((name, line))
    return out


def is_present(name):
    return importlib.util.find_spec(IMPORT_NAMES.get(name.lower(), name.replace("-", "_"))) is not None


def webui_launch():
    """A1111/Forge's `launch` module when running under the webui, else None."""
    try:
        import launch
    except Exception:
        return None
    return launch if hasattr(launch, "run_pip") else None


def main(path=REQUIREMENTS):
    missing = [line for name, line in requirements(path) if not is_present(name)]
    launch = webui_launch() if missing else None
    for line in missing:
        if launch is not None:
            launch.run_pip(f'install "{line}"', f"attnguide requirement: {line}")  # run_pip uses a shell
        else:
            subprocess.check_call([sys.executable, "-m", "pip", "install", line])
    return missing


if __name__ == "__main__" or "launch" in sys.modules:
    main()
