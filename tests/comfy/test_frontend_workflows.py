"""Every example workflow opened by the real ComfyUI frontend in headless Chromium, then run.

One real ComfyUI server (COMFYUI_PATH, CPU) serves the module; one browser session loads each file
with app.loadGraphData and reads back what the frontend made of it. Per workflow:
- no node type is missing (every node is registered, none dropped);
- every widget holds what the file means (widgets_values laid onto the node's inputs in order, see
  tests/support/workflow_widgets.py), and so does the API prompt the frontend would queue;
- no two nodes overlap on the canvas (the frontend's own bounding boxes, title bars included);
- the frontend's prompt, with the tiny checkpoint and fewer steps and pixels, runs on the server and
  its SaveImage writes an image.
Needs COMFYUI_PATH, BROWSER_PYTHON, TINY_CHECKPOINT and Chromium (README, 'Testing in the real
ComfyUI frontend'); skips with the reason otherwise.
"""
import json
import math
from pathlib import Path

import pytest

import frontend_host
import workflow_widgets as W

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
RUN_TIMEOUT = 900


@pytest.fixture(scope="module")
def frontend(tmp_path_factory):
    reason = frontend_host.missing()
    if reason:
        pytest.skip(reason)
    workflows = {p.name: json.loads(p.read_text()) for p in WORKFLOWS}
    base = tmp_path_factory.mktemp("comfy_base")
    with frontend_host.ComfyServer(base) as server:
        _input_images(base / "input", workflows.values())
        info = server.get("/object_info")
        seen = frontend_host.drive(server.url, workflows)
        yield {"server": server, "info": info, "seen": seen, "files": workflows, "base": base}


def _input_images(folder, workflows):
    """The images the workflows load, 256x64: a picture whose alpha (LoadImageMask's mask) covers
    the left half in the first file by name, the right half in the second, and so on."""
    from PIL import Image, ImageDraw
    names = sorted({n["widgets_values"][0] for wf in workflows for n in wf["nodes"]
                    if n["type"] in ("LoadImage", "LoadImageMask")})
    for i, name in enumerate(names):
        image = Image.new("RGBA", (256, 64), (120, 90, 60, 0))
        draw = ImageDraw.Draw(image)
        draw.ellipse((96, 8, 160, 56), fill=(200, 160, 90, 255))
        draw.rectangle((0, 0, 127, 63) if i % 2 == 0 else (128, 0, 255, 63), outline=None,
                       fill=(60, 120, 200, 255))
        image.save(folder / name)


def _ui_only(widget):
    """A widget the frontend adds that no input stands for: LoadImage's upload button, its preview."""
    return widget["name"] == "upload" or widget["name"].startswith("$$")


def _close(a, b):
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a == b
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def _seen(frontend, name):
    return frontend["seen"]["workflows"][name]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_node_is_missing(frontend, path):
    seen = _seen(frontend, path.name)
    wanted = {str(n["id"]): n["type"] for n in frontend["files"][path.name]["nodes"]}
    assert {str(n["id"]): n["type"] for n in seen["nodes"]} == wanted  # frontend 1.49 keeps ids as strings
    assert [n["type"] for n in seen["nodes"] if not n["registered"]] == []
    assert [t for t in wanted.values() if t not in frontend["info"]] == []
    hint = "" if "UpscaleModelLoader" in frontend["info"] else \
        " (ComfyUI's UpscaleModelLoader is missing, which breaks frontend 1.27's model lists: install spandrel, see README)"
    assert seen["errors"] == [], "the frontend threw while loading" + hint


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_widgets_hold_what_the_file_means(frontend, path):
    seen = {str(n["id"]): n for n in _seen(frontend, path.name)["nodes"]}
    prompt = _seen(frontend, path.name)["prompt"]
    wrong = []
    for node in frontend["files"][path.name]["nodes"]:
        inputs = W.object_info_inputs(frontend["info"][node["type"]])
        meant, extra = W.file_meaning(inputs, node.get("widgets_values") or [])
        if extra and not (node["type"] in ("LoadImage", "LoadImageMask") and extra == ["image"]):
            wrong.append(f"{node['id']} {node['type']}: values left over after the last widget: {extra}")
        got = [(w["name"], w["value"]) for w in seen[str(node["id"])]["widgets"] if not _ui_only(w)]
        if len(got) != len(meant) or not all(a[0] == b[0] and _close(a[1], b[1]) for a, b in zip(got, meant)):
            wrong.append(f"{node['id']} {node['type']}: the frontend reads {got}, the file means {meant}")
        queued = prompt.get(str(node["id"]), {}).get("inputs", {})
        for name, value in meant:
            if name != W.CONTROL and not _close(queued.get(name), value):
                wrong.append(f"{node['id']} {node['type']}: queues {name}={queued.get(name)!r}, the file means {value!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_nodes_overlap(frontend, path):
    nodes = _seen(frontend, path.name)["nodes"]
    boxes = {n["id"]: n["bounding"] for n in nodes}
    types = {n["id"]: n["type"] for n in nodes}
    clashes = [(f"{a} {types[a]} {boxes[a]}", f"{b} {types[b]} {boxes[b]}") for a, b in W.overlapping(boxes)]
    assert clashes == []


def _small(prompt, checkpoint):
    """The frontend's prompt with the tiny checkpoint, 2 steps and 1/8 of the pixels; panorama windows of
    1/8 the native size, half a window apart (the files' 64 px stride would leave them no overlap)."""
    prompt = json.loads(json.dumps(prompt))
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = checkpoint
        elif kind in ("KSampler", "BasicScheduler"):
            inputs["steps"] = 2
        elif kind == "EmptyLatentImage":
            inputs["width"], inputs["height"] = max(64, inputs["width"] // 8), max(64, inputs["height"] // 8)
        elif kind == "AttnGuidePanorama":
            inputs["window_width"] = (inputs["window_width"] or 512) // 8
            inputs["window_height"] = (inputs["window_height"] or 512) // 8
            inputs["stride"] = inputs["window_width"] // 2
        elif kind == "AttnGuideAttendAndExcite":
            inputs["max_refinement_iterations"] = min(inputs["max_refinement_iterations"], 2)
    return prompt


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_queued_workflow_saves_an_image(frontend, path):
    server = frontend["server"]
    prompt = _small(_seen(frontend, path.name)["prompt"], server.checkpoint)
    entry = server.run(prompt, RUN_TIMEOUT)
    status = entry.get("status", {})
    assert status.get("status_str") == "success", json.dumps(status.get("messages"), indent=1)[-4000:]
    saves = [k for k, n in prompt.items() if n["class_type"] == "SaveImage"]
    assert saves, "a workflow without SaveImage"
    for key in saves:
        images = entry["outputs"].get(key, {}).get("images", [])
        assert images and all(i["type"] == "output" for i in images), entry["outputs"]
        for image in images:
            file = frontend["base"] / "output" / image.get("subfolder", "") / image["filename"]
            assert file.is_file() and file.stat().st_size > 0
