"""example_workflows/*.json: UI-format workflows with consistent links, our nodes'
widgets_values in schema order as the frontend reads them (with the control_after_generate value
after a seed), and no two nodes on top of each other. With COMFYUI_PATH set, the table below is
checked against the real schemas and the built-in nodes' widget counts against the real ComfyUI.
tests/comfy/test_frontend_workflows.py checks the same files in the real frontend."""
import json
import os
from pathlib import Path

import pytest

import workflow_widgets as W

ROOT = Path(__file__).resolve().parents[2]  # not from conftest: tests/*/conftest.py share that module name

WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
EXPECTED = {"sag.json", "pag.json", "sag_pag_stacked.json", "sega.json", "attend_excite.json",
            "panorama_512x2048.json", "panorama_360.json", "panorama_two_regions.json", "pix2pix_zero.json"}

# Widget inputs of our nodes in define_schema order: (name, io type, default, min, max).
WIDGETS = {
    "AttnGuideSAG": [
        ("scale", "FLOAT", 0.75, -10.0, 10.0),
        ("blur_sigma", "FLOAT", 1.0, 0.0, 10.0),
        ("threshold", "FLOAT", 1.0, 0.0, 10.0),
        ("layer", "STRING", "auto", None, None),
        ("start_percent", "FLOAT", 0.0, 0.0, 1.0),
        ("end_percent", "FLOAT", 1.0, 0.0, 1.0),
    ],
    "AttnGuidePAG": [
        ("scale", "FLOAT", 3.0, 0.0, 100.0),
        ("adaptive_scale", "FLOAT", 0.0, 0.0, 1.0),
        ("layers", "STRING", "auto", None, None),
        ("rescale", "FLOAT", 0.0, 0.0, 1.0),
        ("start_percent", "FLOAT", 0.0, 0.0, 1.0),
        ("end_percent", "FLOAT", 1.0, 0.0, 1.0),
    ],
    "AttnGuideSEGAConcept": [
        ("prompt", "STRING", "", None, None),
        ("direction", "COMBO", "add", None, None),
        ("scale", "FLOAT", 5.0, 0.0, 100.0),
        ("warmup", "FLOAT", 10, 0, 10000),
        ("cooldown", "FLOAT", -1, -1, 10000),
        ("timing", "COMBO", "steps", None, None),
        ("threshold", "FLOAT", 0.9, 0.0, 0.99),
        ("weight", "FLOAT", 1.0, 0.0, 100.0),
    ],
    "AttnGuideSEGA": [
        ("momentum_scale", "FLOAT", 0.1, 0.0, 10.0),
        ("momentum_beta", "FLOAT", 0.4, 0.0, 0.999),
    ],
    "AttnGuideSEGAGuider": [
        ("cfg", "FLOAT", 7.5, 0.0, 100.0),
        ("momentum_scale", "FLOAT", 0.1, 0.0, 10.0),
        ("momentum_beta", "FLOAT", 0.4, 0.0, 0.999),
    ],
    "AttnGuideAttendAndExcite": [
        ("prompt", "STRING", "", None, None),
        ("words", "STRING", "", None, None),
        ("max_excite_steps", "STRING", "25", None, None),
        ("thresholds", "STRING", "0: 0.05, 10: 0.5, 20: 0.8", None, None),
        ("scale_factor", "FLOAT", 20.0, 0.0, 1000.0),
        ("scale_range_start", "FLOAT", 1.0, 0.0, 10.0),
        ("scale_range_end", "FLOAT", 0.5, 0.0, 10.0),
        ("max_refinement_iterations", "INT", 20, 1, 200),
        ("smoothing_sigma", "FLOAT", 0.5, 0.05, 10.0),
        ("attention_downscale", "INT", 4, 1, 64),
        ("token_indices", "STRING", "", None, None),
    ],
    "AttnGuideAttendAndExciteMaps": [
        ("scale", "INT", 8, 1, 64),
    ],
    "AttnGuideAttendAndExciteSampler": [],
    "AttnGuidePanorama": [
        ("window_width", "INT", 0, 0, 16384),
        ("window_height", "INT", 0, 0, 16384),
        ("stride", "INT", 64, 8, 16384),
        ("wrap", "COMBO", "none", None, None),
        ("weights", "COMBO", "uniform", None, None),
        ("window_batch", "INT", 4, 1, 256),
    ],
    "AttnGuidePanoramaRegion": [
        ("strength", "FLOAT", 1.0, 0.0, 10.0),
        ("bootstrap", "FLOAT", 0.2, 0.0, 1.0),
    ],
    "AttnGuidePix2PixZeroDirection": [
        ("source", "STRING", "cat", None, None),
        ("target", "STRING", "dog", None, None),
    ],
    "AttnGuidePix2PixZeroSaveDirection": [
        ("filename", "STRING", "cat_to_dog", None, None),
    ],
    "AttnGuidePix2PixZeroLoadDirection": [
        ("direction_file", "COMBO", None, None, None),
    ],
    "AttnGuidePix2PixZeroInvert": [
        ("seed", "INT", 0, 0, 0xffffffffffffffff),
        ("lambda_auto_corr", "FLOAT", 20.0, 0.0, 1000.0),
        ("lambda_kl", "FLOAT", 20.0, 0.0, 1000.0),
        ("regularization_steps", "INT", 5, 0, 100),
        ("auto_corr_rolls", "INT", 5, 1, 100),
    ],
    "AttnGuidePix2PixZeroEdit": [
        ("cfg", "FLOAT", 7.5, 0.0, 100.0),
        ("guidance_amount", "FLOAT", 0.1, 0.0, 1000.0),
        ("add_noise", "COMBO", "disable", None, None),
        ("noise_seed", "INT", 0, 0, 0xffffffffffffffff),
    ],
    "AttnGuidePix2PixZeroMaps": [
        ("prompt", "STRING", "", None, None),
        ("word", "STRING", "", None, None),
        ("scale", "INT", 8, 1, 64),
    ],
}
_MODEL_IN_OUT = ([("model", "MODEL", False)], ["MODEL"])
_CONCEPTS = "ATTNGUIDE_SEGA_CONCEPTS"
_DIRECTION = "ATTNGUIDE_P2PZ_DIRECTION"
# Socket inputs (name, type, optional) and output types of our nodes, in schema order.
SOCKETS = {
    "AttnGuideSAG": _MODEL_IN_OUT,
    "AttnGuidePAG": _MODEL_IN_OUT,
    "AttnGuideSEGAConcept": ([("clip", "CLIP", True), ("conditioning", "CONDITIONING", True),
                              ("concepts", _CONCEPTS, True)], [_CONCEPTS]),
    "AttnGuideSEGA": ([("model", "MODEL", False), ("concepts", _CONCEPTS, False)], ["MODEL"]),
    "AttnGuideSEGAGuider": ([("model", "MODEL", False), ("positive", "CONDITIONING", False),
                             ("negative", "CONDITIONING", False), ("concepts", _CONCEPTS, False)], ["GUIDER"]),
    "AttnGuideAttendAndExcite": ([("model", "MODEL", False), ("clip", "CLIP", True)], ["MODEL", "CONDITIONING"]),
    "AttnGuideAttendAndExciteMaps": ([("model", "MODEL", False), ("samples", "LATENT", False)], ["IMAGE"]),
    "AttnGuideAttendAndExciteSampler": ([("sampler", "SAMPLER", False)], ["SAMPLER"]),
    "AttnGuidePanorama": _MODEL_IN_OUT,
    "AttnGuidePanoramaRegion": ([("conditioning", "CONDITIONING", False), ("region", "CONDITIONING", False),
                                 ("mask", "MASK", False)], ["CONDITIONING"]),
    "AttnGuidePix2PixZeroDirection": ([("clip", "CLIP", False), ("target_clip", "CLIP", True)], [_DIRECTION]),
    "AttnGuidePix2PixZeroSaveDirection": ([("direction", _DIRECTION, False)], [_DIRECTION]),
    "AttnGuidePix2PixZeroLoadDirection": ([], [_DIRECTION]),
    "AttnGuidePix2PixZeroInvert": ([("model", "MODEL", False), ("positive", "CONDITIONING", False),
                                    ("latent", "LATENT", False), ("sigmas", "SIGMAS", False)], ["LATENT"]),
    "AttnGuidePix2PixZeroEdit": ([("model", "MODEL", False), ("positive", "CONDITIONING", False),
                                  ("negative", "CONDITIONING", False), ("direction", _DIRECTION, False),
                                  ("latent", "LATENT", False), ("sampler", "SAMPLER", False), ("sigmas", "SIGMAS", False)],
                                 ["LATENT", "LATENT", "ATTNGUIDE_P2PZ_MAPS"]),
    "AttnGuidePix2PixZeroMaps": ([("maps", "ATTNGUIDE_P2PZ_MAPS", False), ("clip", "CLIP", False)], ["IMAGE"]),
}
PY_TYPES = {"FLOAT": (int, float), "STRING": (str,), "COMBO": (str,), "INT": (int,)}


def load(path):
    return json.loads(path.read_text())


def test_the_examples_exist():
    assert EXPECTED <= {p.name for p in WORKFLOWS}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_links_are_consistent(path):
    wf = load(path)
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]), "duplicate node ids"
    assert wf["last_node_id"] == max(nodes) and wf["last_link_id"] == max(l[0] for l in wf["links"])
    seen = set()
    for link_id, src, src_slot, dst, dst_slot, type_ in wf["links"]:
        assert link_id not in seen
        seen.add(link_id)
        assert src in nodes and dst in nodes, f"link {link_id}: endpoint missing"
        out = nodes[src]["outputs"][src_slot]
        inp = nodes[dst]["inputs"][dst_slot]
        assert link_id in out["links"] and out["slot_index"] == src_slot
        assert inp["link"] == link_id
        assert out["type"] == inp["type"] == type_
    for node in wf["nodes"]:  # and back: every slot's link exists and points at this slot
        optional = {name for name, _, opt in SOCKETS.get(node["type"], ([], []))[0] if opt}
        for slot, inp in enumerate(node["inputs"]):
            if inp["link"] is None and inp["name"] in optional:
                continue
            assert inp["link"] in seen, f"node {node['id']} input {inp['name']} is not connected"
            assert [l for l in wf["links"] if l[0] == inp["link"]][0][3:5] == [node["id"], slot]
        for slot, out in enumerate(node["outputs"]):
            for link_id in out["links"] or []:
                assert [l for l in wf["links"] if l[0] == link_id][0][1:3] == [node["id"], slot]
    orders = sorted(n["order"] for n in wf["nodes"])
    assert orders == list(range(len(nodes)))
    for link_id, src, _, dst, _, _ in wf["links"]:
        assert nodes[src]["order"] < nodes[dst]["order"], f"link {link_id} runs against the execution order"


def _inputs(node_type):
    return [(name, type_, {}) for name, type_, *_ in WIDGETS[node_type]]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_our_widgets_match_the_schema(path):
    ours = [n for n in load(path)["nodes"] if n["type"].startswith("AttnGuide")]
    assert ours, "an example workflow without an attnguide node"
    for node in ours:
        spec = WIDGETS[node["type"]]
        values = node["widgets_values"]
        names = W.widget_names(_inputs(node["type"]))
        assert len(values) == len(names), f"{node['type']}: {len(values)} widget values for the widgets {names}"
        data = iter(spec)
        for name, value in zip(names, values):
            if name == W.CONTROL:
                assert value in W.CONTROL_VALUES, f"{node['type']}: control_after_generate={value!r}"
                continue
            name, type_, _, lo, hi = next(data)
            assert isinstance(value, PY_TYPES[type_]) and not isinstance(value, bool), f"{name}={value!r}"
            if lo is not None:
                assert lo <= value <= hi, f"{name}={value} outside [{lo}, {hi}]"
        inputs, outputs = SOCKETS[node["type"]]
        assert [(i["name"], i["type"]) for i in node["inputs"]] == [(name, type_) for name, type_, _ in inputs]
        assert [o["type"] for o in node["outputs"]] == outputs


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_seeds_keep_their_control_value(path):
    """The frontend adds a control_after_generate widget after an INT named seed or noise_seed; without
    its saved value every later value slides one place (lambda_kl 5 instead of 20)."""
    missing = [(n["id"], n["type"], W.missing_controls(_inputs(n["type"]), n["widgets_values"]))
               for n in load(path)["nodes"] if n["type"] in WIDGETS]
    assert [m for m in missing if m[2]] == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_nodes_overlap(path):
    nodes = load(path)["nodes"]
    boxes = {n["id"]: W.node_box(n["pos"], n["size"]) for n in nodes}
    assert W.overlapping(boxes) == []


def test_the_table_matches_the_real_schema():
    if not os.environ.get("COMFYUI_PATH"):
        pytest.skip("COMFYUI_PATH is not set: the widget table is checked against the real node schemas only "
                    "with a ComfyUI checkout (see README)")
    from comfy_host import require_comfy
    require_comfy()
    from attnguide.nodes import NODES
    from attnguide.nodes.comfy_api_compat import io
    real, sockets = {}, {}
    for cls in NODES:
        schema = cls.define_schema()
        real[schema.node_id] = [(i.id, str(i.get_io_type()), i.default, getattr(i, "min", None), getattr(i, "max", None))
                                for i in schema.inputs if isinstance(i, io.WidgetInput)]
        sockets[schema.node_id] = ([(i.id, str(i.get_io_type()), bool(i.optional)) for i in schema.inputs
                                    if not isinstance(i, io.WidgetInput)], [str(o.get_io_type()) for o in schema.outputs])
    assert real == WIDGETS
    assert sockets == SOCKETS


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_builtin_widget_counts_match_the_real_nodes(path):
    if not os.environ.get("COMFYUI_PATH"):
        pytest.skip("COMFYUI_PATH is not set: built-in nodes are checked only against a ComfyUI checkout")
    from comfy_host import require_comfy
    require_comfy()
    import nodes as comfy_nodes
    if "BasicScheduler" not in comfy_nodes.NODE_CLASS_MAPPINGS:  # ComfyUI loads its custom-sampler nodes at start-up
        import asyncio
        asyncio.run(comfy_nodes.load_custom_node(str(Path(comfy_nodes.__file__).parent / "comfy_extras" / "nodes_custom_sampler.py")))
    for node in load(path)["nodes"]:
        if node["type"] in WIDGETS:
            continue
        required = comfy_nodes.NODE_CLASS_MAPPINGS[node["type"]].INPUT_TYPES()["required"]
        count, sockets = 0, []
        for name, (type_, *opts) in required.items():
            if isinstance(type_, list) or type_ in W.WIDGET_TYPES:
                count += 1 + W.has_control(name, type_, opts[0] if opts else None)
            else:
                sockets.append(name)
        assert len(node["widgets_values"]) == count, node["type"]
        assert [i["name"] for i in node["inputs"]] == sockets, node["type"]
