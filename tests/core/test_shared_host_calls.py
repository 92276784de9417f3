"""The host-free pieces both ComfyUI-shaped hosts (ComfyUI, Forge/reForge) share: the options of
the pack's own model calls, the chaining of another pack's attn1 patch, Attend-and-Excite's
measuring forward and per-image loop, SAG's and PAG's methods, Pix2Pix-Zero's map patches and
the panorama's pixel inputs."""
import contextlib

import pytest
import torch
from attnguide.attention.attn1_replace import RoutedAttn1Replace, chain_foreign
from attnguide.attention.cross_maps import ReferenceMaps, attention_from_probs, cross_attention_probs
from attnguide.attention.excite_forward import map_evaluator
from attnguide.attention.layers import Layer
from attnguide.attention.model_calls import run_extra, unrouted
from attnguide.attention.router import ROLES_KEY, STEP_KEY, AttentionHook, Method, Router, StepContext, step_context
from attnguide.attention.step_window import Schedule
from attnguide.guidance import panorama as pano
from attnguide.guidance import pix2pix_zero as p2pz
from attnguide.guidance.attend_excite import ExciteSettings, excite_latent
from attnguide.methods.attend_excite import excite_images
from attnguide.methods import pag, sag
from attnguide.methods.args_step import post_cfg_function
from attnguide.methods.build import Target
from attnguide.methods.pix2pix_zero import comparing, recording

LAYERS = [Layer("input", 4, 0), Layer("input", 5, 0)]
SAG_DEFAULTS = {p.name: p.default for p in sag.SPEC.params}
PAG_DEFAULTS = {p.name: p.default for p in pag.SPEC.params}


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


def _sag(layer, run_extra=None):
    built = sag.build(Target("sag.0", "unet", tuple(LAYERS)), **{**SAG_DEFAULTS, "layer": layer})
    return built.method, post_cfg_function(built.post_cfg, run_extra, None, None)


def _args(ctx, denoised, **more):
    to = {STEP_KEY: ctx} if ctx is not None else {}
    return {"model_options": {"transformer_options": to}, "denoised": denoised, "input": denoised, "sigma": None,
            "cond_denoised": None, "uncond": None, "uncond_denoised": None, **more}


def test_sag_reads_one_layer():
    assert _sag("d4")[0].hooks[0].layers == frozenset(LAYERS[:1])
    with pytest.raises(ValueError, match=r"layer: SAG reads one layer, 'd4-5' selects 2 \(.*\). Name one, e.g. "):
        _sag("d4-5")


def test_sag_method_hooks_its_layer_on_the_guided_branch_and_leaves_other_steps_alone():
    method, post_cfg = _sag("d4")
    (hook,) = method.hooks
    assert method.key == "sag.0" and hook.layers == frozenset(LAYERS[:1])
    ctx = StepContext(0, 10, 1.0, 5.0)
    assert hook.roles(ctx) == {"uncond"}
    ctx.cfg = 1.0
    assert hook.roles(ctx) == {"cond"}
    denoised = torch.randn(1, 4, 8, 8)
    assert post_cfg({"model_options": {}, "denoised": denoised}) is denoised
    assert post_cfg(_args(ctx, denoised)) is denoised   # not active this step
    ctx.active = {"sag.0"}   # active, but its layer captured nothing this step
    assert post_cfg(_args(ctx, denoised)) is denoised


def test_pag_post_cfg_adds_the_perturbed_difference_at_the_hosts_timestep():
    built = pag.build(Target("pag.0", "unet", tuple(LAYERS)), **{**PAG_DEFAULTS, "adaptive_scale": 0.01, "layers": "d4"})
    post_cfg = post_cfg_function(built.post_cfg, None, lambda args: torch.tensor([900.0]), None)
    ctx = StepContext(0, 10, 1.0, 5.0)
    denoised, cond, perturbed = torch.randn(3, 1, 4, 8, 8)
    args = _args(ctx, denoised, cond_denoised=cond)
    assert post_cfg(args) is denoised   # no perturbed rows this step
    ctx.extra_outputs["pag.0"] = perturbed
    assert torch.allclose(post_cfg(args), denoised + 2.0 * (cond - perturbed))   # 3 - 0.01 * (1000 - 900)


def test_reference_maps_recorded_then_compared_layer_by_layer():
    maps, seen, loss = ReferenceMaps(), [], {}
    qs = [torch.randn(1, 4, 8) for _ in range(2)]
    k, v = torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    record = recording(maps, "cond", seen.append)
    for q in qs:
        assert torch.allclose(record(q, k, v, {"n_heads": 2}), attention_from_probs(cross_attention_probs(q, k, 2), v, 2))
    assert len(seen) == 2 and len(maps.maps["cond"]) == 2
    compare = comparing(maps, "cond", 2, loss)
    edited = [q + 0.5 for q in qs]
    for q in edited:
        compare(q, k, v, {"n_heads": 2})
    want = sum(p2pz.map_loss(cross_attention_probs(q, k, 2), cross_attention_probs(r, k, 2), 2)
               for q, r in zip(edited, qs))
    assert loss["value"] > 0 and torch.allclose(loss["value"], want)
