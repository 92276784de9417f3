"""Every WebUI parameter is the ComfyUI node's input of the same name, default and range,
and the params dict handed to the backends is keyed exactly like the node's execute()."""
import importlib.util
import inspect
import os
from pathlib import Path

import pytest

from attnguide.methods import METHODS, attend_excite, pag, panorama, sag, sega

# what a node's execute(**params) hands its params to, and the parameters those take from the host
BUILDS = {"AttnGuidePAG": pag.build, "AttnGuideSAG": sag.build, "AttnGuideSEGA": sega.build,
          "AttnGuideSEGAGuider": sega.build, "AttnGuideSEGAConcept": sega.concept,
          "AttnGuideAttendAndExcite": attend_excite.build, "AttnGuidePanorama": panorama.build}
BUILD_HOST_ARGS = {"target", "index", "concept_rows", "uncond_rows", "word_indices"}

ROOT = Path(__file__).resolve().parents[2]
NODE_FIELD = {"float": "FLOAT", "int": "INT", "text": "STRING", "choice": "COMBO"}
# inputs the WebUI takes from the generation instead of a control
FROM_GENERATION = {"AttnGuideAttendAndExcite": {"prompt"},
                   # Pix2Pix-Zero: the generation's CFG scale; img2img always inverts the init image (no added noise)
                   "AttnGuidePix2PixZeroEdit": {"cfg", "add_noise", "noise_seed"}}
# a WebUI section made of several nodes' inputs: Pix2Pix-Zero's Direction, Inversion and Edit
NODES_OF = {"AttnGuidePix2PixZeroEdit": ("AttnGuidePix2PixZeroDirection", "AttnGuidePix2PixZeroInvert",
                                         "AttnGuidePix2PixZeroEdit")}


def _widgets():
    spec = importlib.util.spec_from_file_location("workflow_tables", ROOT / "tests" / "comfy" / "test_example_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.WIDGETS  # checked against the real schemas by that file's COMFYUI_PATH test


def _tables():
    for spec in METHODS.values():
        yield spec.node_id, spec.params
        if spec.concept_params:
            yield "AttnGuideSEGAConcept", spec.concept_params


@pytest.mark.parametrize("node_id, table", list(_tables()), ids=lambda v: v if isinstance(v, str) else "")
def test_params_are_the_node_widgets(node_id, table):
    widgets = {name: (kind, default, lo, hi) for node in NODES_OF.get(node_id, (node_id,))
               for name, kind, default, lo, hi in _widgets()[node]}
    ours = {p.name: (NODE_FIELD[p.kind], p.default, p.minimum, p.maximum) for p in table}
    assert set(ours) == set(widgets) - FROM_GENERATION.get(node_id, set())
    for name, (kind, default, lo, hi) in ours.items():
        assert (kind, default) == widgets[name][:2], name
        if kind in ("FLOAT", "INT"):
            assert (lo, hi) == widgets[name][2:], name
    assert all(p.tooltip and p.label for p in table)


def test_read_gives_node_kwargs_and_parses():
    sag = METHODS["sag"]
    enabled, params = sag.read([True, "0.5", 1, 1.0, "m0.0", 0, 1])
    assert enabled and params == dict(scale=0.5, blur_sigma=1.0, threshold=1.0, layer="m0.0", start_percent=0.0, end_percent=1.0)
    sega = METHODS["sega"]
    args = [True]
    for slot in range(sega.concept_slots):
        args += ["sunglasses" if slot == 1 else "", "remove", 4, 5, -1, "percent", 0.8, 1.0]
    args += [0.1, 0.4]
    enabled, params = sega.read(args)
    assert params == {"momentum_scale": 0.1, "momentum_beta": 0.4, "concepts": [dict(
        prompt="sunglasses", direction="remove", scale=4.0, warmup=5.0, cooldown=-1.0, timing="percent", threshold=0.8, weight=1.0)]}
    assert sega.infotext(params)["AttnGuide SEGA 1 prompt"] == "sunglasses"
    with pytest.raises(ValueError, match="expected 7 script args"):
        sag.read([True, 0.5])
    with pytest.raises(ValueError, match="Direction: 'sideways' is not one of add, remove"):
        sega.read(args[:2] + ["sideways"] + args[3:])
    _, pano = METHODS["panorama"].read([False, "512", 0, 64.0, "horizontal", "uniform", 4], {(None, "stride"): 32})
    assert pano["window_width"] == 512 and pano["stride"] == 32


def test_params_are_the_execute_kwargs():
    if not os.environ.get("COMFYUI_PATH"):
        pytest.skip("COMFYUI_PATH is not set: execute() signatures are read from the real nodes only with a ComfyUI checkout")
    from comfy_host import require_comfy
    require_comfy()
    from attnguide.nodes import NODES
    nodes = {cls.define_schema().node_id: cls for cls in NODES}
    sockets = {"model", "clip", "conditioning", "concepts", "positive", "negative", "latent", "sampler", "sigmas",
               "target_clip"}

    def accepted(node):
        """execute()'s named parameters; where it takes **params (handed to the method's build), the
        build's own parameters but the host's (target, and the functions the adapter gives)."""
        parameters = inspect.signature(nodes[node].execute).parameters
        names = {n for n, p in parameters.items() if p.kind != inspect.Parameter.VAR_KEYWORD}
        if len(names) < len(parameters):
            names |= set(inspect.signature(BUILDS[node]).parameters) - BUILD_HOST_ARGS
        return names

    def kwargs(node_id):
        names = {name for node in NODES_OF.get(node_id, (node_id,)) for name in accepted(node)}
        return names - sockets - ({"direction"} if node_id in NODES_OF else set())  # Pix2Pix-Zero's direction socket

    for spec in METHODS.values():
        args = [True] + [p.default for _, p in spec.controls()]
        if spec.concept_slots:
            args[1] = "a concept"
        _, params = spec.read(args)
        params.update({name: "text" for name in FROM_GENERATION.get(spec.node_id, ())})
        assert set(params) == kwargs(spec.node_id) | ({"concepts"} if spec.concept_slots else set()), spec.key
        if spec.concept_slots:
            assert set(params["concepts"][0]) == kwargs("AttnGuideSEGAConcept")
        inputs = [i for node in NODES_OF.get(spec.node_id, (spec.node_id,)) for i in nodes[node].define_schema().inputs]
        for param in spec.params:
            node_input = next(i for i in inputs if i.id == param.name)
            if param.kind == "choice":
                assert tuple(node_input.options) == param.choices


def test_host_detection(monkeypatch):
    from attnguide.scripts import attnguide_webui
    found = set()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in found else None)
    assert attnguide_webui.host() == "a1111"
    found |= {"ldm_patched"}
    assert attnguide_webui.host() == "reforge"
    found |= {"backend", "backend.patcher"}
    assert attnguide_webui.host() == "forge"


def test_webui_layer_imports_without_a_host():
    import subprocess
    import sys
    code = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location('attnguide', {str(ROOT / '__init__.py')!r}, "
            f"submodule_search_locations=[{str(ROOT)!r}]); m = importlib.util.module_from_spec(spec); sys.modules['attnguide'] = m; "
            "spec.loader.exec_module(m); import attnguide.scripts.attnguide_webui as w; "
            "import attnguide.scripts.attnguide_webui.a1111.router, attnguide.scripts.attnguide_webui.a1111.backend; "
            "hosts = [n for n in sys.modules if n.split('.')[0] in ('modules', 'gradio', 'ldm', 'sgm', 'backend', 'ldm_patched', 'comfy')]; "
            "print(hosts); sys.exit(1 if hosts else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ui_components_follow_the_argument_order():
    sys_path = str(Path(__file__).resolve().parent)
    import sys
    sys.path.insert(0, sys_path)
    import a1111_double as a1
    from attnguide.scripts.attnguide_webui.script import MethodScript
    h = a1.install()
    try:
        for spec in METHODS.values():
            script = type("S", (MethodScript, a1.Script), {"spec": spec})()
            components = script.ui(False)
            assert components[0].kind == "InputAccordion" and components[0].value is False
            assert [c.value for c in components[1:]] == [p.default for _, p in spec.controls()]
            assert [c.kwargs["label"] for c in components[1:]] == [
                p.label if slot is None else f"{p.label} {slot + 1}" for slot, p in spec.controls()]
            assert [key for _, key in script.infotext_fields[1:]] == script.paste_field_names == [
                spec.infotext_key(slot, p) for slot, p in spec.controls()]
            assert all(c.kwargs["info"] for c in components[1:])
    finally:
        a1.uninstall(h)
