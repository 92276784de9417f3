"""install.py: nothing to do when everything is present; never torch; launch.run_pip under the webui,
and no installer of its own anywhere else (ComfyUI-Manager installs requirements.txt itself)."""
import os
import importlib.util
import runpy
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # not from conftest: tests/*/conftest.py share that module name

INSTALL = ROOT / "install.py"


@pytest.fixture
def install(monkeypatch):
    monkeypatch.delitem(sys.modules, "launch", raising=False)  # import must not run main()
    spec = importlib.util.spec_from_file_location("attnguide_install", INSTALL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def pip_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "check_call", lambda args, *a, **kw: calls.append(list(args)))
    monkeypatch.setattr(subprocess, "run", lambda args, *a, **kw: calls.append(list(args)))
    monkeypatch.setattr(subprocess, "Popen", lambda args, *a, **kw: calls.append(list(args)))
    monkeypatch.setattr(os, "system", lambda command: calls.append([command]))
    return calls


def fake_launch(monkeypatch):
    launch = types.ModuleType("launch")
    launch.calls = []
    launch.is_installed = lambda name: importlib.util.find_spec(name) is not None
    launch.run_pip = lambda command, desc=None, *a, **kw: launch.calls.append(command)
    monkeypatch.setitem(sys.modules, "launch", launch)
    return launch


def test_requirements_never_list_torch(install):
    names = [name.lower() for name, _ in install.requirements()]
    assert names and not {"torch", "torchvision", "torchaudio"} & set(names)
    assert "pillow" in names  # imported as PIL


def test_everything_present_makes_no_pip_call(install, pip_calls):
    assert install.main() == []
    assert pip_calls == []


def test_everything_present_run_as_script(pip_calls, monkeypatch):
    """`python install.py` as ComfyUI-Manager runs it."""
    monkeypatch.delitem(sys.modules, "launch", raising=False)
    runpy.run_path(str(INSTALL), run_name="__main__")
    assert pip_calls == []


def test_everything_present_under_webui(pip_calls, monkeypatch):
    """A1111 imports/execs install.py with its `launch` module importable."""
    launch = fake_launch(monkeypatch)
    runpy.run_path(str(INSTALL), run_name="install")
    assert launch.calls == [] and pip_calls == []


def _reqs(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\ntorch>=2.0\ntorchvision\nnumpy\nPillow\n"
                    "attnguide-fake-missing-pkg>=1.0  # not installed anywhere\n")
    return path


def test_missing_package_outside_webui_installs_nothing(install, pip_calls, tmp_path, monkeypatch, capsys):
    """ComfyUI-Manager runs `python install.py` with no webui: it reports, ComfyUI-Manager installs."""
    monkeypatch.delitem(sys.modules, "launch", raising=False)
    assert install.main(_reqs(tmp_path)) == ["attnguide-fake-missing-pkg>=1.0"]
    assert pip_calls == []
    assert "attnguide-fake-missing-pkg>=1.0" in capsys.readouterr().err


def test_install_py_starts_no_process():
    """The Comfy Registry scans install.py: no process module, no pip of its own."""
    source = INSTALL.read_text()
    assert "subprocess" not in source and "os.system" not in source and "sys.executable" not in source


def test_missing_package_webui_uses_run_pip(install, pip_calls, tmp_path, monkeypatch):
    launch = fake_launch(monkeypatch)
    install.main(_reqs(tmp_path))
    assert launch.calls == ['install "attnguide-fake-missing-pkg>=1.0"']  # quoted: run_pip uses a shell
    assert pip_calls == []
    assert not any("torch" in c for c in launch.calls)
