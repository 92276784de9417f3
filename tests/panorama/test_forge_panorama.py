"""Panorama through the Forge backend equals the Panorama node (ComfyUI standing in for ldm_patched),
alone and stacked with PAG (rescale too), SEGA, SAG and Attend-and-Excite, which run per window as in ComfyUI."""
import pytest

from node_runs import pag_node, rel, sag_node
from test_forge_sag_pag import forge, run

SHAPE = (16, 40)


def panorama_node(model, window=128, stride=64, wrap="horizontal", weights="uniform", batch=4):
    from attnguide.nodes.panorama import Panorama
    return Panorama.execute(model, window_width=window, window_height=window, stride=stride, wrap=wrap, weights=weights, window_batch=batch).result[0]


def forge_panorama(patcher, window=128, stride=64, wrap="horizontal", weights="uniform", batch=4, steps=4):
    return forge("panorama", patcher, steps=steps, window_width=window, window_height=window, stride=stride, wrap=wrap,
                 weights=weights, window_batch=batch)


@pytest.fixture
def old(model):
    import forge_double as F
    return F.old_patcher(model)


@pytest.mark.parametrize("wrap,weights,batch", [("horizontal", "uniform", 4), ("none", "feathered", 3), ("both", "uniform", 1)])
def test_panorama_equals_node(model, old, wrap, weights, batch):
    ours = run(forge_panorama(old, wrap=wrap, weights=weights, batch=batch), shape=SHAPE, forge_path=True)
    ref = run(panorama_node(model, wrap=wrap, weights=weights, batch=batch), shape=SHAPE)
    assert rel(ours, ref) <= 1e-5
    assert rel(run(model, shape=SHAPE), ref) >= 1e-3, "the panorama did not change the result"


@pytest.mark.parametrize("order", ["pag_first", "panorama_first"])
def test_panorama_with_pag_equals_nodes(model, old, order):
    if order == "pag_first":
        ours, ref = forge_panorama(forge("pag", old)), panorama_node(pag_node(model))
    else:
        ours, ref = forge("pag", forge_panorama(old)), pag_node(panorama_node(model))
    ours, ref = run(ours, batch=2, shape=SHAPE, forge_path=True), run(ref, batch=2, shape=SHAPE)
    assert rel(ours, ref) <= 1e-5
    assert rel(run(panorama_node(model), batch=2, shape=SHAPE), ref) >= 1e-3


@pytest.mark.parametrize("order", ["sag_first", "panorama_first"])
def test_panorama_with_sag_and_pag_rescale_equals_nodes(model, old, order):
    """SAG's map and PAG's rescale are per window, as the node's PREDICT_NOISE wrapper runs them."""
    if order == "sag_first":
        ours = forge_panorama(forge("pag", forge("sag", old), rescale=0.7))
        ref = panorama_node(pag_node(sag_node(model), rescale=0.7))
    else:
        ours = forge("pag", forge("sag", forge_panorama(old)), rescale=0.7)
        ref = pag_node(sag_node(panorama_node(model)), rescale=0.7)
    ours, ref = run(ours, batch=2, shape=SHAPE, forge_path=True), run(ref, batch=2, shape=SHAPE)
    assert rel(ours, ref) <= 1e-5
    assert rel(run(panorama_node(pag_node(model, rescale=0.7)), batch=2, shape=SHAPE), ref) >= 1e-3, \
        "SAG did not change the panorama"


@pytest.mark.parametrize("order", ["excite_first", "panorama_first"])
def test_panorama_with_attend_and_excite_equals_nodes(sd1, order):
    """Each window batch is moved on its own before its evaluation, as the node's wrapper runs inside the panorama's."""
    import forge_double as F
    from test_forge_attend_excite import STEPS, excite_node, forge_excite
    old = F.old_patcher(sd1)
    pano = dict(window=64, stride=32)
    if order == "excite_first":
        ours, ref = forge_panorama(forge_excite(old), steps=STEPS, **pano), panorama_node(excite_node(sd1), **pano)
    else:
        ours, ref = forge_excite(forge_panorama(old, steps=STEPS, **pano)), excite_node(panorama_node(sd1, **pano))
    ours = run(ours, shape=SHAPE, steps=STEPS, forge_path=True)
    ref = run(ref, shape=SHAPE, steps=STEPS)
    assert rel(ours, ref) <= 1e-5
    assert rel(run(panorama_node(sd1, **pano), shape=SHAPE, steps=STEPS), ref) >= 1e-3, \
        "Attend-and-Excite did not change the panorama"


def test_bad_panorama_params_are_named(sd1):
    import forge_double as F
    old = F.old_patcher(sd1)
    for params, message in [({"window_width": 100}, "window_width: 100 px is not a multiple"),
                            ({"stride": 1024}, "stride: 1024 px is larger than the window"),
                            ({"wrap": "round"}, "wrap: unknown value 'round'"),
                            ({"weights": "soft"}, "weights: unknown mode 'soft'")]:
        with pytest.raises(ValueError, match=message):
            forge("panorama", old, **params)


def test_panorama_defaults_are_the_nodes_defaults(comfy):
    from attnguide.nodes.panorama import Panorama
    from attnguide.scripts.attnguide_webui.forge.params import DEFAULTS
    inputs = {i.id: i.default for i in Panorama.define_schema().inputs if i.id != "model"}
    assert DEFAULTS["panorama"] == inputs


def test_panorama_with_sega_equals_nodes(sd1):
    """SEGA's momentum and warmup are kept per window batch, as the node's run state is."""
    import forge_double as F
    from test_forge_sega import STEPS, build, forge_sega, sega_node
    old = F.old_patcher(sd1)
    stack, dicts = build(sd1, batch=2)
    ours = forge_panorama(forge_sega(old, dicts), steps=STEPS, batch=2)
    ref = panorama_node(sega_node(sd1, stack), batch=2)
    ours, ref = run(ours, batch=2, shape=SHAPE, steps=STEPS, forge_path=True), run(ref, batch=2, shape=SHAPE, steps=STEPS)
    assert rel(ours, ref) <= 1e-5
    assert rel(run(panorama_node(sd1, batch=2), batch=2, shape=SHAPE, steps=STEPS), ref) >= 1e-3
