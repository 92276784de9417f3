"""Ready for the Comfy Registry: what `comfy node publish` would zip leaves out tests, benchmarks
and the demo, and every Python file in it stays free of what the registry's scanner flags
(eval/exec, starting processes or pip, environment reads, network modules)."""
import importlib.util
import shutil
import subprocess
import sys
import tomllib

import pytest

import registry_archive as archive

ROOT = archive.ROOT
LEFT_OUT = ("tests/", "bench/", "demo/", ".ci/")


def test_comfyignore_leaves_out_tests_bench_and_the_demo():
    candidates, published = archive.candidate_files(), set(archive.published())
    for folder in LEFT_OUT:
        tracked = [f for f in candidates if f.startswith(folder)]
        assert tracked, f"no file under {folder}: the check below would prove nothing"
        assert not published & set(tracked), f"{folder} would be published"
    for needed in ("__init__.py", "nodes/__init__.py", "attention/router.py", "guidance/schedule.py",
                   "requirements.txt", "pyproject.toml", "LICENSE", "install.py", "example_workflows/pag.json"):
        assert needed in published, needed
    ignored = archive.ignore_matcher(archive.patterns(ROOT / ".comfyignore"))
    assert ignored("tests/core/test_new.py") and ignored("bench/bench_new.py") and ignored("demo/train_state.pt")
    assert not ignored("nodes/new_node.py") and not ignored("nodes/tests.py")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pathspec 1.x renames "gitwildmatch"; comfy-cli uses it
def test_reader_agrees_with_pathspec():
    """comfy-cli matches .comfyignore with pathspec's gitwildmatch; so does this reader, on every file here."""
    if importlib.util.find_spec("pathspec") is None:
        pytest.skip("pathspec (requirements-test.txt) is not installed: comfy-cli's matcher is not available to compare")
    import pathspec
    for ignore_file in (ROOT / ".comfyignore", ROOT / ".gitignore"):
        lines = archive.patterns(ignore_file)
        spec = pathspec.PathSpec.from_lines("gitwildmatch", lines)
        ours = archive.ignore_matcher(lines)
        paths = archive.candidate_files() + ["tests", "x/tests/a.py", "docs/demo_effects_new.json", "docs/a.json",
                                             "bench/results/r.json", "a/__pycache__/b.pyc", "demo/train_state.pt1"]
        assert [p for p in paths if ours(p)] == [p for p in paths if spec.match_file(p)], ignore_file.name


def test_published_python_is_clean():
    files = [f for f in archive.published() if f.endswith(".py")]
    assert len(files) > 20
    dirty = {f: archive.findings(ROOT / f) for f in files}
    assert {f: found for f, found in dirty.items() if found} == {}


SYNTHETIC = {
    "eval": ("x = eval('1 + 1')\n", "eval/exec"),
    "exec": ("exec('x = 1')\n", "eval/exec"),
    "method eval": ("model.eval()\n", "eval/exec"),  # the registry's scanner matches `.eval(` too
    "aliased exec": ("run = exec\nrun('x = 1')\n", "eval/exec"),
    "builtins.eval": ("import builtins\nf = getattr(builtins, 'ev' + 'al')\nbuiltins.compile('1', 'f', 'eval')\n", "eval/exec"),
    "subprocess pip": ("import subprocess, sys\nsubprocess.check_call([sys.executable, '-m', 'pip', 'install', 'x'])\n",
                       "pip"),
    "process module": ("import subprocess as sp\nsp.run(['ls'])\n", "process"),
    "os.system pip": ("import os\nos.system('pip install x')\n", "pip"),
    "os.environ": ("import os\nhome = os.environ.get('HOME')\n", "environment"),
    "os.getenv": ("import os\nhome = os.getenv('HOME')\n", "environment"),
    "from os import environ": ("from os import environ as e\nhome = e['HOME']\n", "environment"),
    "from os import getenv": ("from os import getenv as g\nhome = g('HOME')\n", "environment"),
    "urllib.request": ("import urllib.request\nurllib.request.urlopen('http://example.com')\n", "network"),
    "from urllib import request": ("from urllib import request as r\n", "network"),
    "requests": ("import requests as r\nr.get('http://example.com')\n", "network"),
    "http.client": ("from http import client\n", "network"),
    "socket": ("import socket as s\ns.create_connection(('example.com', 80))\n", "network"),
}


@pytest.mark.parametrize("case", SYNTHETIC, ids=str)
def test_scan_flags_a_synthetic_file(case, tmp_path):
    source, rule = SYNTHETIC[case]
    path = tmp_path / "node.py"
    path.write_text("import torch\n" + source)
    assert rule in [r for r, _ in archive.findings(path)], case


def test_scan_passes_a_clean_synthetic_file(tmp_path):
    path = tmp_path / "node.py"
    path.write_text("import re\nimport torch\n\nLAYER = re.compile(r'^m0$')\n\n\ndef f(x):\n"
                    "    \"\"\"Evaluates the socket's tensor.\"\"\"\n    return torch.nn.functional.relu(x)\n")
    assert archive.findings(path) == []


def test_a_forbidden_call_in_a_published_folder_fails_the_check(tmp_path):
    """The whole path: a pack with a bad node and a bad test; only the node is published and flagged."""
    shutil.copy(ROOT / ".comfyignore", tmp_path / ".comfyignore")
    (tmp_path / "nodes").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "nodes" / "bad.py").write_text("import os\nDEBUG = os.environ.get('X')\n")
    (tmp_path / "tests" / "test_x.py").write_text("import os\nPATH = os.environ.get('X')\n")
    published = archive.published(tmp_path)
    assert published == [".comfyignore", "nodes/bad.py"]
    assert archive.findings(tmp_path / "nodes" / "bad.py") == [("environment", 2)]


RUFF_RULES = "S102,S307,S310,S602,S603,S604,S605,S606,S607"  # exec, eval, urlopen, starting processes


def _ruff(paths):
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff (requirements-test.txt) is not installed: the ruff half of the scan needs it")
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache", "--output-format",
                           "concise", "--select", RUFF_RULES, *map(str, paths)], capture_output=True, text=True)


def test_ruff_security_rules_pass_on_published_python():
    proc = _ruff([ROOT / f for f in archive.published() if f.endswith(".py")])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_flags_eval_and_exec_in_a_synthetic_file(tmp_path):
    path = tmp_path / "node.py"
    path.write_text("x = eval('1')\nexec('y = 2')\n")
    proc = _ruff([path])
    assert proc.returncode == 1 and "S307" in proc.stdout and "S102" in proc.stdout, proc.stdout + proc.stderr


def test_pyproject_describes_the_pack_and_matches_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for method in ("SAG", "PAG", "SEGA", "Attend-and-Excite", "Pix2Pix-Zero", "MultiDiffusion"):
        assert method in project["description"], method
    for host in ("ComfyUI", "A1111", "Forge"):
        assert host in project["description"], host
    major, minor, patch = map(int, project["version"].split("."))
    assert (major, minor) >= (0, 2)
    requirements = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert sorted(filter(None, requirements)) == sorted(d for d in project["dependencies"] if d != "torch")
