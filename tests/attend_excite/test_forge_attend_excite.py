"""Attend-and-Excite through the Forge backend equals the node (ComfyUI standing in for ldm_patched)."""
import pytest

from node_runs import pag_node, rel, sag_node
from test_forge_sag_pag import forge, run

STEPS = 5
ARGS = dict(prompt="", words="", max_excite_steps="3", thresholds="0: 0.05, 1: 0.5", scale_factor=20.0,
            scale_range_start=1.0, scale_range_end=0.5, max_refinement_iterations=20, smoothing_sigma=0.5,
            attention_downscale=1, token_indices="2, 5")


def excite_node(m, **kw):
    from attnguide.nodes.attend_excite import AttendAndExcite
    return AttendAndExcite.execute(m, **{**ARGS, **kw}).args[0]


def forge_excite(patcher, **kw):
    return forge("attend_excite", patcher, steps=STEPS, **{**ARGS, **kw})


def old_of(m):
    import forge_double as F
    return F.old_patcher(m)


@pytest.mark.parametrize("batch", [1, 2])
def test_equals_node(sd1, batch):
    ours = run(forge_excite(old_of(sd1)), batch=batch, steps=STEPS, forge_path=True)
    ref = run(excite_node(sd1), batch=batch, steps=STEPS)
    assert rel(ours, ref) <= 1e-5
    assert rel(run(sd1, batch=batch, steps=STEPS), ref) >= 1e-3, "Attend-and-Excite did not move the result"


def test_sdxl_equals_node(comfy):
    import comfy_host as H
    sdxl = H.tiny_sdxl()
    ours = run(forge_excite(old_of(sdxl), attention_downscale=2), steps=STEPS, forge_path=True)
    ref = run(excite_node(sdxl, attention_downscale=2), steps=STEPS)
    assert rel(ours, ref) <= 1e-5
    assert rel(run(sdxl, steps=STEPS), ref) >= 1e-3


def test_stacked_with_pag_rescale_and_sag_equals_nodes(sd1):
    """The move is handed to the sampler after every other post-CFG function, whatever the order."""
    ours = forge("sag", forge("pag", forge_excite(old_of(sd1)), steps=STEPS, rescale=0.7), steps=STEPS)
    ref = sag_node(pag_node(excite_node(sd1), rescale=0.7))
    ours, ref = run(ours, steps=STEPS, forge_path=True), run(ref, steps=STEPS)
    assert rel(ours, ref) <= 1e-5
    assert rel(run(pag_node(sag_node(sd1), rescale=0.7), steps=STEPS), ref) >= 1e-3


def test_words_found_with_the_hosts_tokenizer(sd1):
    pieces = {"a</w>": 320, "cat</w>": 1, "and</w>": 2, "frog</w>": 3, "gir": 4, "affe</w>": 5}

    def tokenize(text):
        out, position = [], 1
        for word in text.replace(",", " ").split():
            parts = ["gir", "affe</w>"] if word == "giraffe" else [word + "</w>"]
            for part in parts:
                out.append((position, pieces.get(part, 99), part))
                position += 1
        return out

    kw = dict(prompt="cat and giraffe", words="cat, giraffe", token_indices="")
    m = forge_excite(old_of(sd1), tokenize=tokenize, **kw)
    assert rel(run(m, steps=STEPS, forge_path=True), run(excite_node(sd1, token_indices="1, 4"), steps=STEPS)) <= 1e-5
    with pytest.raises(ValueError, match="'dog' is not in the prompt. The prompt's words are: cat, and, giraffe"):
        forge_excite(old_of(sd1), tokenize=tokenize, **{**kw, "words": "dog"})


def test_bad_params_are_named(sd1):
    old = old_of(sd1)
    cases = [(dict(token_indices=""), "no tokenizer"),
             (dict(attention_downscale=8), "attention_downscale 8: this model has no cross-attention there"),
             (dict(max_excite_steps="many"), "max_excite_steps: cannot read 'many'"),
             (dict(thresholds="0: 2"), "thresholds: cannot read '0: 2'"),
             (dict(token_indices="0"), "positions start at 1")]
    for params, message in cases:
        with pytest.raises(ValueError, match=message):
            forge_excite(old, **params)


def test_without_sigmas_it_warns_and_does_nothing(sd1, caplog):
    from attnguide.scripts.attnguide_webui.forge import backend as forge_backend
    m = forge_backend.apply("attend_excite", old_of(sd1), ARGS)
    assert rel(run(m, steps=STEPS, forge_path=True), run(sd1, steps=STEPS)) == 0.0
    assert "the run's sigmas are unknown" in caplog.text


def test_defaults_are_the_nodes_defaults(comfy):
    from attnguide.nodes.attend_excite import AttendAndExcite
    from attnguide.scripts.attnguide_webui.forge.params import DEFAULTS
    inputs = {i.id: i.default for i in AttendAndExcite.define_schema().inputs if hasattr(i, "default")}
    assert DEFAULTS["attend_excite"] == inputs
