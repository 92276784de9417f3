"""The host-free pieces both ComfyUI-shaped hosts (ComfyUI, Forge/reForge) share: the options of
the pack's own model calls, the chaining of another pack's attn1 patch, Attend-and-Excite's
measuring forward and per-image loop, and the panorama's pixel inputs."""
import contextlib

import pytest
import torch

from attnguide.attention.attn1_replace import RoutedAttn1Replace, chain_foreign
from attnguide.attention.cross_maps import cross_attention_probs
from attnguide.attention.excite_forward import excite_images, map_evaluator
from attnguide.attention.layers import Layer
from attnguide.attention.model_calls import run_extra, unrouted
from attnguide.attention.router import ROLES_KEY, STEP_KEY, AttentionHook, Method, Router, step_context
from attnguide.guidance import panorama as pano
from attnguide.guidance.attend_excite import ExciteSettings, excite_latent

LAYERS = [Layer("input", 4, 0), Layer("input", 5, 0)]


def test_unrouted_options_label_rows_and_add_attn2_patches_for_the_call_only():
    old = object()
    options = {"other": 1, "transformer_options": {"patches_replace": {"attn2": {("output", 1, 0): old},
                                                                       "attn1": {"x": 1}}, "keep": 2}}
    attend = lambda q, k, v, extra_options: q
    out = unrouted(options, 3, LAYERS, attend)
    to = out["transformer_options"]
    assert to[ROLES_KEY] == [None, None, None] and to["keep"] == 2 and out["other"] == 1
    assert to["patches_replace"]["attn2"] == {("output", 1, 0): old, ("input", 4, 0): attend, ("input", 5, 0): attend}
    assert to["patches_replace"]["attn1"] == {"x": 1}
    assert options["transformer_options"]["patches_replace"]["attn2"] == {("output", 1, 0): old}  # not mutated
    assert ROLES_KEY not in options["transformer_options"]
    assert "patches_replace" not in unrouted({}, 1)["transformer_options"]


def test_run_extra_calls_the_hosts_batch_function_unrouted():
    seen = []
    calc = lambda model, conds, x, sigma, options: seen.append((model, conds, x, sigma, options)) or ["out"]
    args = {"model": "m", "sigma": 2.0, "model_options": {"transformer_options": {"a": 1}}}
    assert run_extra(calc, args, ["c1", "c2"], "x") == ["out"]
    (model, conds, x, sigma, options), = seen
    assert (model, conds, x, sigma) == ("m", ["c1", "c2"], "x", 2.0)
    assert options["transformer_options"] == {"a": 1, ROLES_KEY: [None, None]}


def test_step_context_is_the_one_in_the_options():
    assert step_context({}) is None
    assert step_context({"transformer_options": {STEP_KEY: "ctx"}}) == "ctx"


def test_chain_foreign_wraps_another_packs_attn1_patch_on_routed_layers_only():
    hook = AttentionHook(frozenset(LAYERS[:1]), lambda ctx: {"cond"}, lambda *a: None)
    router = Router().with_method(Method("m", hooks=(hook,)))
    kernel = lambda *a: None
    to = {"patches_replace": {"attn1": {}}}
    assert chain_foreign(to, router, kernel) is to
    foreign, elsewhere = (lambda *a: "foreign"), (lambda *a: "elsewhere")
    ours = RoutedAttn1Replace(LAYERS[0], None, kernel)
    assert chain_foreign({"patches_replace": {"attn1": {("input", 4, 0): ours}}}, router, kernel)[
        "patches_replace"]["attn1"][("input", 4, 0)] is ours
    for key in [("input", 4, 0), ("input", 4)]:   # a patch on the layer, or on its whole block
        to = {"patches_replace": {"attn1": {key: foreign, ("input", 7, 0): elsewhere}}}
        attn1 = chain_foreign(to, router, kernel)["patches_replace"]["attn1"]
        wrapped = attn1[("input", 4, 0)]
        assert isinstance(wrapped, RoutedAttn1Replace) and wrapped.previous is foreign and wrapped.kernel is kernel
        assert attn1[("input", 7, 0)] is elsewhere
        assert to["patches_replace"]["attn1"] == {key: foreign, ("input", 7, 0): elsewhere}  # not mutated


def fake_unet(run_layers, queries, tokens=6, heads=2, dim=8):
    """calc(...) that runs `run_layers` in order (query counts `queries`) through their attn2 patches
    where they have one, recording which ran; the latent feeds q, so the maps depend on it."""
    ran, qkv = [], []

    def calc(model, conds, x, sigma, options):
        to = options["transformer_options"]
        assert to[ROLES_KEY] == [None] and len(conds) == 1
        patches = to["patches_replace"]["attn2"]
        for layer, n in zip(run_layers, queries):
            q = x.flatten()[:1] * torch.ones(1, n, heads * dim) + torch.linspace(0, 1, n * heads * dim).reshape(1, n, -1)
            k = torch.linspace(-1, 1, tokens * heads * dim).reshape(1, tokens, -1)
            v = torch.ones(1, tokens, heads * dim)
            ran.append(layer)
            patch = patches.get((layer.kind, layer.block, layer.depth))
            if patch is not None:
                qkv.append((q, k))
                patch(q, k, v, {"n_heads": heads})
        return [x]
    return calc, ran, qkv


def test_measuring_forward_averages_the_chosen_level_and_stops_at_its_last_layer():
    layers = [Layer("input", 4, 0), Layer("output", 3, 0), Layer("output", 4, 0)]
    unet = [layers[0], Layer("middle", 0, 0), layers[1], layers[2], Layer("output", 5, 0)]
    calc, ran, qkv = fake_unet(unet, [4, 1, 4, 4, 4])
    conds = [{"model_conds": {}}]
    evaluate = map_evaluator(calc, None, conds, torch.tensor([1.0]), {}, layers, 2, 2, 4, (1, 2), "Name")
    x = torch.ones(1, 4, 8, 8)
    maps = evaluate(x, 0)
    assert ran == unet[:4]  # the layer after the last captured one never ran
    expected = torch.cat([cross_attention_probs(q, k, 2) for q, k in qkv], dim=1).mean(dim=1)
    assert maps.shape == (2, 2, 6) and torch.allclose(maps, expected[0].reshape(2, 2, 6))


def test_measuring_forward_errors_name_the_input():
    conds = [{"model_conds": {}}]
    calc, _, _ = fake_unet(LAYERS, [9, 9])
    evaluate = map_evaluator(calc, None, conds, torch.tensor([1.0]), {}, LAYERS, 2, 2, 4, (1,), "Name")
    with pytest.raises(RuntimeError, match="Name: no cross-attention map of 2x2 was captured at the chosen "
                                           "attention_downscale 4"):
        evaluate(torch.ones(1, 4, 8, 8), 0)
    calc, _, _ = fake_unet(LAYERS, [4, 4], tokens=6)
    evaluate = map_evaluator(calc, None, conds, torch.tensor([1.0]), {}, LAYERS, 2, 2, 4, (1, 5), "Name")
    with pytest.raises(ValueError, match=r"Name: token index 5 is past the prompt's last position \(4\)"):
        evaluate(torch.ones(1, 4, 8, 8), 0)


def test_excite_images_moves_each_image_on_its_own_inside_the_gradient_context():
    settings = ExciteSettings((1, 2), max_iter_to_alter=5, thresholds=())
    evaluate = lambda xi, item: (xi.mean(1)[0, :, :, None] * torch.arange(1.0, 5.0) * (item + 1)).softmax(-1)
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    entered = []

    @contextlib.contextmanager
    def gradients():
        entered.append(True)
        yield

    moved, maps = excite_images(x, 1, 10, 0.5, settings, evaluate, gradients())
    assert entered == [True] and moved.dtype == x.dtype and len(maps) == 3
    for item in range(3):
        want, want_maps, _ = excite_latent(x[item:item + 1].clone(), 1, 10, 0.5, settings,
                                           lambda xi: evaluate(xi, item))
        assert torch.equal(moved[item:item + 1], want.to(x.dtype)) and torch.equal(maps[item], want_maps)
    assert not torch.equal(moved, x)
    same, none = excite_images(x, 7, 10, 0.5, settings, evaluate, gradients())   # after the window
    assert torch.equal(same, x) and none == [None, None, None]


def test_panorama_pixel_inputs_become_latent_settings():
    assert pano.pixel_settings(0, 0, 64, "none", pano.UNIFORM, 1, 8, 64) == ((64, 64), (8, 8), (False, False))
    assert pano.pixel_settings(1024, 512, 32, "horizontal", pano.FEATHERED, 4, 8, 128) == ((64, 128), (4, 4),
                                                                                          (False, True))
    for args, message in [((100, 0, 64, "none", pano.UNIFORM, 1), "window_width: 100 px is not a multiple of the "
                                                                  r"latent scale \(8 px\); use e.g. 96"),
                          ((0, 0, 1024, "none", pano.UNIFORM, 1), r"stride: 1024 px is larger than the window \(512 px\)"),
                          ((0, 0, 64, "round", pano.UNIFORM, 1), "wrap: unknown value 'round'"),
                          ((0, 0, 64, "none", pano.UNIFORM, 0), "window_batch: 0"),
                          ((0, 0, 64, "none", "spiky", 1), "spiky")]:
        with pytest.raises(ValueError, match=message):
            pano.pixel_settings(*args, 8, 64)
