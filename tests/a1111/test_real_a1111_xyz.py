"""The X/Y/Z plot axes on a real A1111 v1.10.1, API only (`--nowebui`, where A1111 builds the
scripts' controls before any on_before_ui callback) and with the gradio UI: every numeric
parameter's axis is listed exactly once, and an axis turns its method on in each cell with the
cell's value (scripts/attnguide_webui/xyz.py)."""
import pytest

import webui_payloads as P
from webui_payloads import info, pixels
from attnguide.scripts.attnguide_webui.xyz import axis_label

XYZ = "x/y/z plot"


def expected_labels():
    return sorted(axis_label(spec, slot, param) for spec in P.METHODS.values() for slot, param in spec.controls()
                  if param.numeric)


def axis_choices(server, img2img):
    (xyz,) = [s for s in server.get("/sdapi/v1/script-info") if s["name"] == XYZ and s["is_img2img"] == img2img]
    return xyz["args"][0]["choices"]  # X type (the dropdown's labels; the API takes the index)


def xyz_args(x_type, x_values):
    # scripts/xyz_grid.py Script.run: x, y, z (type, values, dropdown values), draw_legend, include_lone_images,
    # include_sub_grids, no_fixed_seeds, vary_seeds_x/y/z, margin_size, csv_mode
    return [x_type, x_values, [], 0, "", [], 0, "", [], True, True, False, False, False, False, False, 0, False]


@pytest.fixture(params=["api-only", "ui"])
def server(request):
    return request.getfixturevalue("a1111" if request.param == "api-only" else "a1111_ui")


@pytest.mark.parametrize("img2img", [False, True])
def test_every_axis_listed_once(server, img2img):
    ours = [c for c in axis_choices(server, img2img) if c.startswith("[AttnGuide]")]
    assert sorted(ours) == expected_labels()  # sorted(): each exactly once


def test_axis_turns_the_method_on_per_cell(server):
    plain = pixels(server.post("/sdapi/v1/txt2img", P.request())["images"][0])
    choices = axis_choices(server, False)
    label = "[AttnGuide] SAG Scale"
    body = P.request(script_name=XYZ, script_args=xyz_args(choices.index(label), "0.5, 3"))
    # SAG off in its own section, on a layer where the 64x64 image shows it: the axis alone turns it on
    body["alwayson_scripts"] = {P.METHODS["sag"].title: {"args": P.script_args("sag", False, **P.SETTINGS["sag"])}}
    answer = server.post("/sdapi/v1/txt2img", body)
    infotexts = info(answer)["infotexts"]
    cells = {}
    for image, text in zip(answer["images"], infotexts):
        for value in ("0.5", "3.0"):
            if f"AttnGuide SAG scale: {value}," in text:
                cells[value] = pixels(image)
    assert set(cells) == {"0.5", "3.0"}, infotexts
    assert len({cells["0.5"], cells["3.0"], plain}) == 3
    assert pixels(server.post("/sdapi/v1/txt2img", P.request())["images"][0]) == plain
