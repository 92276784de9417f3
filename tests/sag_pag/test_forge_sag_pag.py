"""The Forge/reForge backend (scripts/attnguide_webui/forge/backend.py) on the ComfyUI-shaped
contract: a real ComfyUI stands in for ldm_patched, cut down to the API Forge has
(tests/support/forge_double.py), and must give the ComfyUI nodes' numbers."""
import contextlib
import copy

import pytest
import torch

import node_runs
from node_runs import BatchLog, nodes, pag_node, rel, sag_node


def backend():
    from attnguide.scripts.attnguide_webui.forge import backend as forge_backend
    return forge_backend


def forge(method, patcher, steps=4, **params):
    import forge_double as F
    return backend().apply(method, patcher, {**params, "sigmas": F.schedule(patcher, steps)})


def run(m, batch=1, cfg=5.0, shape=(16, 16), steps=4, sampler="euler", forge_path=False):
    import forge_double as F
    with F.forge_sampling() if forge_path else contextlib.nullcontext():
        return node_runs.run(m, batch, cfg, shape, steps, sampler)


@pytest.fixture
def old(model):
    import forge_double as F
    return F.old_patcher(model)


def test_sag_equals_node(model, old):
    ours = run(forge("sag", old), forge_path=True)
    ref = run(sag_node(model))
    assert rel(ours, ref) <= 1e-5
    assert rel(run(model), ref) >= 1e-3, "SAG did not move the result"


def test_sag_cfg1_uses_cond_branch(sd1):
    import forge_double as F
    old = F.old_patcher(sd1)
    ours, ref = run(forge("sag", old), cfg=1.0, forge_path=True), run(sag_node(sd1), cfg=1.0)
    assert rel(ours, ref) <= 1e-5
    assert rel(run(sd1, cfg=1.0), ref) >= 1e-3


def test_pag_equals_node(model, old):
    ours = run(forge("pag", old), forge_path=True)
    ref = run(pag_node(model))
    assert rel(ours, ref) <= 1e-5
    assert rel(run(model), ref) >= 1e-3, "PAG did not move the result"


@pytest.mark.parametrize("cfg,adaptive,rescale", [(1.0, 0.0, 0.0), (5.0, 0.002, 0.7), (1.0, 0.002, 0.0)])
def test_pag_options_equal_node(sd1, cfg, adaptive, rescale):
    import forge_double as F
    old = F.old_patcher(sd1)
    ours = run(forge("pag", old, adaptive_scale=adaptive, rescale=rescale), cfg=cfg, forge_path=True)
    ref = run(pag_node(sd1, adaptive_scale=adaptive, rescale=rescale), cfg=cfg)
    assert rel(ours, ref) <= 1e-5
    assert rel(run(sd1, cfg=cfg), ref) >= 1e-3


@pytest.mark.parametrize("order", ["sag_first", "pag_first"])
def test_stacked_equals_nodes_batch2_nonsquare(model, old, order):
    first, second = ("sag", "pag") if order == "sag_first" else ("pag", "sag")
    stacked = forge(second, forge(first, old))
    ref_model = pag_node(sag_node(model))
    shape = (13, 19)
    ours, ref = run(stacked, batch=2, shape=shape, forge_path=True), run(ref_model, batch=2, shape=shape)
    assert ours.shape == (2, 4, *shape)
    assert rel(ours, ref) <= 1e-5
    assert rel(run(sag_node(model), batch=2, shape=shape), ref) >= 1e-3
    assert rel(run(pag_node(model), batch=2, shape=shape), ref) >= 1e-3


def test_windows_and_layers_equal_node(model, old):
    from attnguide.attention.layers import unet_layers
    layers = ",".join(str(l) for l in unet_layers(model.model.diffusion_model) if l.kind == "output")
    ours = run(forge("sag", forge("pag", old, layers=layers, start_percent=0.25, end_percent=0.75), start_percent=0.5),
               forge_path=True)
    ref = run(sag_node(pag_node(model, layers=layers, start_percent=0.25, end_percent=0.75), start_percent=0.5))
    assert rel(ours, ref) <= 1e-5
    assert rel(run(pag_node(model, layers=layers)), ref) >= 1e-3


def test_pag_rows_join_the_main_call_and_windows_cost_nothing(sd1):
    import forge_double as F
    m = forge("sag", forge("pag", F.old_patcher(sd1), start_percent=0.25, end_percent=0.75), start_percent=0.5)
    log = BatchLog(sd1)
    try:
        run(m, forge_path=True)
    finally:
        log.close()
    assert log.sizes == [2, 3, 3, 1, 2, 1]  # steps 0..3: PAG at 1, 2 (in the main call); SAG at 2, 3 (own call)


def test_only_the_old_api_is_used_and_the_input_is_untouched(sd1):
    import forge_double as F
    old = F.old_patcher(sd1)
    before = copy.copy(old.model_options), copy.copy(old.model_options["transformer_options"])
    m = forge("pag", forge("sag", old))  # OldPatcher raises on any patcher_extension API
    assert (old.model_options, old.model_options["transformer_options"]) == before
    assert type(m) is F.OldPatcher and m is not old
    assert not any(m.wrappers.values()) and not any(m.callbacks.values())
    to = m.model_options["transformer_options"]
    assert "optimized_attention_override" not in to
    assert set(to["patches_replace"]["attn1"]) == {("middle", 0, 0)}
    assert list(to.get("patches", {})) == []  # no attn1 markers: replace patches only


def test_other_samplers_run(sd1):
    import forge_double as F
    m = forge("pag", forge("sag", F.old_patcher(sd1), steps=3), steps=3)
    for sampler in ("heun", "dpmpp_2m", "dpmpp_sde"):
        out = run(m, sampler=sampler, steps=3, forge_path=True)
        ref = run(pag_node(sag_node(sd1)), sampler=sampler, steps=3)
        assert rel(out, ref) <= 1e-5, sampler


def test_interrupted_run_leaves_nothing(sd1):
    import forge_double as F
    m = forge("pag", forge("sag", F.old_patcher(sd1)))
    clean = run(m, forge_path=True)
    calls = []

    def interrupt(args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("stop")
        return args["denoised"]

    broken = m.clone()
    broken.set_model_sampler_post_cfg_function(interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(broken, forge_path=True)
    hooks = [mod for mod in sd1.model.diffusion_model.modules() if mod._forward_hooks or mod._forward_pre_hooks]
    assert hooks == []
    assert rel(run(m, forge_path=True), clean) == 0.0  # the next run starts afresh


def test_a_replace_patch_set_later_still_runs(sd1):
    """Another extension calling set_model_replace_all / set_model_attn1_replace after us."""
    import forge_double as F
    seen = []

    def theirs(q, k, v, extra):
        seen.append(q.shape[0])
        return torch.nn.functional.scaled_dot_product_attention(
            *(t.view(t.shape[0], -1, extra["n_heads"], t.shape[-1] // extra["n_heads"]).transpose(1, 2) for t in (q, k, v))
        ).transpose(1, 2).reshape(q.shape)

    m = forge("pag", F.old_patcher(sd1))
    m.set_model_attn1_replace(theirs, "middle", 0, 0)
    ours = run(m, forge_path=True, steps=2)
    assert seen == [2, 2]  # cond + uncond rows; the PAG rows are ours (identity attention)
    assert rel(ours, run(pag_node(sd1), steps=2)) <= 1e-5
    assert rel(run(sd1, steps=2), ours) >= 1e-3


def test_a_unet_wrapper_set_before_is_composed(sd1):
    import forge_double as F
    calls = []

    def theirs(apply_model, args):
        calls.append(args["input"].shape[0])
        return apply_model(args["input"], args["timestep"], **args["c"])

    old = F.old_patcher(sd1)
    old.set_model_unet_function_wrapper(theirs)
    ours = run(forge("pag", old, steps=2), forge_path=True, steps=2)
    assert calls == [3, 3]  # it sees the whole batch, PAG rows included
    assert rel(ours, run(pag_node(sd1), steps=2)) <= 1e-5


def test_bad_params_are_named(sd1):
    import forge_double as F
    old = F.old_patcher(sd1)
    with pytest.raises(ValueError, match="unknown parameter.*'scal'"):
        backend().apply("pag", old, {"scal": 2})
    with pytest.raises(ValueError, match="layer: SAG reads one layer"):
        backend().apply("sag", old, {"layer": "u"})
    with pytest.raises(ValueError, match="layers: 'x9' names no attention layer|cannot read"):
        backend().apply("pag", old, {"layers": "x9"})
    with pytest.raises(ValueError, match="start_percent"):
        backend().apply("pag", old, {"start_percent": 0.8, "end_percent": 0.2})
    with pytest.raises(ValueError, match="unknown method 'foo'"):
        backend().apply("foo", old, {})
    assert old.model_options == F.old_patcher(sd1).model_options


def test_defaults_are_the_nodes_defaults(comfy):
    from attnguide.scripts.attnguide_webui.forge.params import DEFAULTS
    for name, node in zip(("sag", "pag"), nodes()):
        inputs = {i.id: i.default for i in node.define_schema().inputs if i.id != "model"}
        assert DEFAULTS[name] == inputs
