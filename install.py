"""Install missing runtime dependencies of attnguide under A1111/Forge. Never installs torch.

A1111 and Forge run this file with their `launch` module importable; missing requirements are
installed through its `run_pip`, the webui's own installer. ComfyUI-Manager also runs it
(`python install.py`), but there it only reports: ComfyUI-Manager and the Comfy Registry
install requirements.txt themselves, and this file never starts an installer of its own.
The hosts already ship everything in requirements.txt, so normally there is nothing to do.
"""
import importlib.util
import re
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
    """The missing requirement lines; under the webui each goes to its run_pip, elsewhere none is installed."""
    missing = [line for name, line in requirements(path) if not is_present(name)]
    launch = webui_launch() if missing else None
    if launch is None:
        if missing:
            print(f"attnguide: missing {', '.join(missing)}; install them from requirements.txt "
                  "(ComfyUI-Manager does so when it installs the pack)", file=sys.stderr)
        return missing
    for line in missing:
        launch.run_pip(f'install "{line}"', f"attnguide requirement: {line}")  # run_pip uses a shell
    return missing


if __name__ == "__main__" or "launch" in sys.modules:
    main()
