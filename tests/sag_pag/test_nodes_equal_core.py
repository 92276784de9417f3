"""The nodes inside a real ComfyUI sampling run equal the core computed the plain way."""
import pytest
import torch

import comfy_host as H
from node_runs import BatchLog, pag_node, rel, run, sag_node


def test_sag_equals_core(model):
    from reference_patches import ref_sag
    plain, ours, ref = run(model), run(sag_node(model)), run(ref_sag(model))
    assert rel(ours, ref) <= 1e-5
    assert rel(plain, ref) >= 1e-3, "SAG did not move the result"


def test_sag_without_cfg_uses_cond_branch(sd1):
    from reference_patches import ref_sag
    plain, ours, ref = run(sd1, cfg=1.0), run(sag_node(sd1), cfg=1.0), run(ref_sag(sd1), cfg=1.0)
    assert rel(ours, ref) <= 1e-5
    assert rel(plain, ref) >= 1e-3


def test_pag_equals_core(model):
    from reference_patches import ref_pag
    plain, ours, ref = run(model), run(pag_node(model)), run(ref_pag(model))
    assert rel(ours, ref) <= 1e-5
    assert rel(plain, ref) >= 1e-3, "PAG did not move the result"


@pytest.mark.parametrize("cfg,adaptive,rescale", [(1.0, 0.0, 0.0), (5.0, 0.002, 0.7), (1.0, 0.002, 0.0)])
def test_pag_options_equal_core(sd1, cfg, adaptive, rescale):
    from reference_patches import ref_pag
    ours = run(pag_node(sd1, adaptive_scale=adaptive, rescale=rescale), cfg=cfg)
    ref = run(ref_pag(sd1, adaptive_scale=adaptive, rescale=rescale), cfg=cfg)
    assert rel(ours, ref) <= 1e-5
    assert rel(run(sd1, cfg=cfg), ref) >= 1e-3


def test_pag_layer_selection_equals_core(model):
    from reference_patches import ref_pag
    from attnguide.attention.layers import unet_layers
    layers = [l for l in unet_layers(model.model.diffusion_model) if l.kind == "output"][:2]
    text = ",".join(str(l) for l in layers)
    ours = run(pag_node(model, layers=text))
    ref = run(ref_pag(model, layers=[tuple(l) for l in layers]))
    assert rel(ours, ref) <= 1e-5
    assert rel(run(model), ref) >= 1e-3


@pytest.mark.parametrize("order", ["sag_first", "pag_first"])
def test_sag_pag_stacked_equals_core(model, order):
    from reference_patches import ref_pag, ref_sag
    stacked = pag_node(sag_node(model)) if order == "sag_first" else sag_node(pag_node(model))
    ref = run(ref_pag(ref_sag(model)))
    out = run(stacked)
    assert rel(out, ref) <= 1e-5
    assert rel(run(ref_sag(model)), ref) >= 1e-3 and rel(run(ref_pag(model)), ref) >= 1e-3


def test_batch2_odd_nonsquare(model):
    from reference_patches import ref_pag, ref_sag
    shape = (13, 19)
    out = run(pag_node(sag_node(model)), batch=2, shape=shape)
    ref = run(ref_pag(ref_sag(model)), batch=2, shape=shape)
    assert out.shape == (2, 4, *shape)
    assert rel(out, ref) <= 1e-5
    assert rel(out[0], out[1]) > 1e-3  # different noise per item, not one item copied


def test_pag_rows_run_in_the_same_unet_call(sd1):
    log = BatchLog(sd1)
    try:
        run(pag_node(sd1), steps=3)
    finally:
        log.close()
    assert log.sizes == [3, 3, 3]


def test_sag_costs_one_extra_pass_of_batch_b(sd1):
    log = BatchLog(sd1)
    try:
        run(pag_node(sag_node(sd1)), batch=2, steps=2)
    finally:
        log.close()
    assert log.sizes == [6, 2, 6, 2]


def test_schedule_window_costs_nothing_outside(sd1):
    log = BatchLog(sd1)
    try:
        windowed = run(sag_node(pag_node(sd1, start_percent=0.25, end_percent=0.75), start_percent=0.5), steps=4)
    finally:
        log.close()
    # steps 0..3: PAG on at 1, 2; SAG on at 2, 3
    assert log.sizes == [2, 3, 3, 1, 2, 1]
    assert rel(windowed, run(sd1, steps=4)) >= 1e-4


def test_chunked_batches_equal_one_batch(sd1, monkeypatch):
    """When memory is short ComfyUI runs cond, uncond (and our rows) in separate calls."""
    import comfy.model_management
    stacked = pag_node(sag_node(sd1))
    whole = run(stacked, batch=2, steps=2)
    real = comfy.model_management.get_free_memory
    monkeypatch.setattr(comfy.model_management, "get_free_memory",
                        lambda dev=None, torch_free_too=False: real(dev, True) if torch_free_too else 0)
    log = BatchLog(sd1)
    try:
        chunked = run(stacked, batch=2, steps=2)
    finally:
        log.close()
    assert log.sizes == [2, 2, 2, 2] * 2
    assert rel(chunked, whole) <= 1e-5


def test_attn1_replace_fallback_equals_override(sd1, monkeypatch):
    from attnguide.comfyui import router as router_comfy
    via_override = run(pag_node(sag_node(sd1)))
    monkeypatch.setattr(router_comfy, "HAS_OVERRIDE", False)
    patched = pag_node(sag_node(sd1))
    assert "optimized_attention_override" not in patched.model_options["transformer_options"]
    assert rel(run(patched), via_override) <= 1e-6


def test_other_samplers_run(sd1):
    for sampler in ("heun", "dpmpp_2m", "ddim"):
        out = run(pag_node(sag_node(sd1)), sampler=sampler, steps=3)
        assert torch.isfinite(out).all()


def test_img2img_equals_core_and_counts_steps_actually_run(sd1):
    """denoise < 1: the methods act on the partial schedule, and windows count its steps."""
    from reference_patches import ref_pag, ref_sag
    pos, neg = H.conds(sd1)
    image = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    img2img = lambda m, steps=4: H.sample(m, pos, neg, image, steps=steps, cfg=5.0, denoise=0.5)
    ours, ref = img2img(pag_node(sag_node(sd1))), img2img(ref_pag(ref_sag(sd1)))
    assert rel(ours, ref) <= 1e-5
    assert rel(img2img(sd1), ref) >= 1e-3
    log = BatchLog(sd1)
    try:
        img2img(pag_node(sd1, end_percent=0.5), steps=4)
    finally:
        log.close()
    assert log.sizes == [3, 3, 2, 2]  # 4 of the 8 scheduled steps run; PAG on for the first half of those
