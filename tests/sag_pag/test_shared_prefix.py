"""PAG's perturbed rows share the conditional rows' computation up to the first perturbed
layer: the result equals the unshared computation, and the shared path is really taken."""
import logging

import pytest
import torch

import comfy_host as H
from node_runs import pag_node, rel, run, sag_node


def unshared(make, monkeypatch):
    """The same patched model built on a host without diffusion-model wrappers: plain extra rows."""
    from attnguide.comfyui import shared_prefix as shared_prefix_comfy
    with monkeypatch.context() as m:
        m.setattr(shared_prefix_comfy, "HAS_WRAPPER", False)
        return make()


def pick(model, where):
    from attnguide.attention.layers import unet_layers
    layers = [l for l in unet_layers(model.model.diffusion_model) if l.kind == where]
    return "m0" if where == "middle" else str(layers[0] if where == "input" else layers[len(layers) // 2])


class Rows:
    """Rows that enter the UNet's first input block and its final output layer, per forward."""

    def __init__(self, model):
        dm = model.model.diffusion_model
        self.first, self.last = [], []
        self.handles = [dm.input_blocks[0][0].register_forward_pre_hook(lambda m, a: self.first.append(a[0].shape[0])),
                        dm.out.register_forward_pre_hook(lambda m, a: self.last.append(a[0].shape[0]))]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def no_hooks_left(model):
    return all(not m._forward_pre_hooks for m in model.model.diffusion_model.modules())


@pytest.mark.parametrize("cfg,batch", [(5.0, 1), (1.0, 1), (5.0, 2)])
@pytest.mark.parametrize("where", ["input", "middle", "output"])
def test_shared_prefix_equals_unshared(model, where, cfg, batch, monkeypatch):
    layers = pick(model, where)
    with Rows(model) as rows:
        shared = run(pag_node(model, layers=layers), cfg=cfg, batch=batch, steps=2)
    plain = run(unshared(lambda: pag_node(model, layers=layers), monkeypatch), cfg=cfg, batch=batch, steps=2)
    assert rel(shared, plain) <= 1e-5
    assert rel(run(model, cfg=cfg, batch=batch, steps=2), plain) >= 1e-3, "PAG did not move the result"
    main_rows = (2 if cfg > 1 else 1) * batch
    assert rows.first == [main_rows] * 2, "the perturbed rows ran the shared prefix"
    assert rows.last == [main_rows + batch] * 2
    assert no_hooks_left(model)


def test_unshared_host_runs_the_extra_rows_everywhere(sd1, monkeypatch):
    with Rows(sd1) as rows:
        run(unshared(lambda: pag_node(sd1), monkeypatch), steps=2)
    assert rows.first == [3, 3] and rows.last == [3, 3]


@pytest.mark.parametrize("cfg", [5.0, 1.0])
@pytest.mark.parametrize("order", ["sag_first", "pag_first"])
def test_stacked_with_sag(model, order, cfg, monkeypatch):
    """SAG hooks m0.0 on the uncond rows (CFG > 1) or the cond rows (CFG 1); with PAG in an output
    block the copies then diverge from the cond rows at m0.0 (CFG 1), else at PAG's layer."""
    layers = pick(model, "output")
    make = (lambda: pag_node(sag_node(model), layers=layers)) if order == "sag_first" \
        else (lambda: sag_node(pag_node(model, layers=layers)))
    with Rows(model) as rows:
        shared = run(make(), cfg=cfg, steps=2)
    assert rel(shared, run(unshared(make, monkeypatch), cfg=cfg, steps=2)) <= 1e-5
    main_rows = 2 if cfg > 1 else 1
    assert rows.first == [main_rows, 1] * 2 and rows.last == [main_rows + 1, 1] * 2  # main call, SAG's pass


def tiny_controlnet(model):
    """A ControlNet with random weights whose residuals also go to the input blocks (as a T2I
    adapter's do: the 'input' list), so every list of the control dict is exercised."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management
    import comfy.ops

    class WithInputResiduals(comfy.controlnet.ControlNet):
        def get_control(self, *args):
            out = super().get_control(*args)
            # 'output'[i] is added to input block i's skip, 'input' is consumed from the end
            out["input"] = [None if t is None else 0.5 * t for t in reversed(out["output"])]
            return out

    unet = H.SD1_UNET if model.model.adm_channels == 0 else dict(H.SDXL_UNET, num_head_channels=16)
    net = comfy.cldm.cldm.ControlNet(hint_channels=3, **unet, dtype=torch.float32, device="cpu",
                                     operations=comfy.ops.disable_weight_init)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / (p[0].numel() ** 0.5 if p.ndim >= 2 else 10))
    hint = torch.rand(1, 3, 128, 128, generator=g)
    device = comfy.model_management.get_torch_device()
    return lambda: WithInputResiduals(net, load_device=device).set_cond_hint(hint, 0.8)


@pytest.mark.parametrize("where", ["input", "middle", "output"])
def test_controlnet_residuals(model, where, monkeypatch, caplog):
    control = tiny_controlnet(model)
    layers = pick(model, where)

    def sample(m, controlled=True):
        pos, neg = H.conds(m)
        if controlled:  # one control object for both, as ControlNetApplyAdvanced: cond and uncond batch together
            net = control()
            pos, neg = ([[c, {**d, "control": net}] for c, d in conds] for conds in (pos, neg))
        return H.sample(m, pos, neg, torch.zeros(1, 4, 16, 16), steps=2, cfg=5.0)

    caplog.set_level(logging.WARNING)
    with Rows(model) as rows:
        shared = sample(pag_node(model, layers=layers))
    plain = sample(unshared(lambda: pag_node(model, layers=layers), monkeypatch))
    assert "control could not be applied" not in caplog.text
    assert rows.first == [2, 2]
    assert rel(shared, plain) <= 1e-5
    assert rel(sample(pag_node(model, layers=layers), controlled=False), plain) >= 1e-3, "the ControlNet did nothing"


def test_other_block_patches(sd1, monkeypatch):
    """FreeU (output_block_patch) and Kohya deep shrink (input and output block patches) stacked
    before and after our PAG."""
    from comfy_extras.nodes_freelunch import FreeU_V2
    from comfy_extras.nodes_model_downscale import PatchModelAddDownscale

    def others(m):
        m = H.builtin(FreeU_V2, m, 1.3, 1.4, 0.9, 0.2)
        return H.builtin(PatchModelAddDownscale, m, 1, 2.0, 0.0, 1.0, False, "bicubic", "bicubic")

    for layers in ("m0", pick(sd1, "output"), pick(sd1, "input")):
        for make in (lambda: pag_node(others(sd1), layers=layers), lambda: others(pag_node(sd1, layers=layers))):
            with Rows(sd1) as rows:
                shared = run(make(), steps=2)
            assert rows.first == [2, 2]
            assert rel(shared, run(unshared(make, monkeypatch), steps=2)) <= 1e-5
    assert rel(run(others(sd1), steps=2), run(sd1, steps=2)) >= 1e-3


def test_falls_back_with_a_log_line_when_a_layer_patch_could_see_the_shared_rows(sd1, monkeypatch, caplog):

    class Unused(torch.nn.Module):
        pass

    def with_embed_patch(m):
        m = m.clone()
        m.set_model_patch((Unused, lambda *a: None), "forward_timestep_embed_patch")
        return m

    caplog.set_level(logging.INFO, logger="attnguide")
    with Rows(sd1) as rows:
        out = run(with_embed_patch(pag_node(sd1)), steps=2)
    assert rows.first == [3, 3]
    assert "forward_timestep_embed_patch" in caplog.text and "no shared prefix" in caplog.text
    assert rel(out, run(unshared(lambda: pag_node(sd1), monkeypatch), steps=2)) <= 1e-5


def test_hooks_are_removed_when_the_forward_fails(sd1):
    import comfy.model_management

    def fail(h, hsp, transformer_options):
        raise comfy.model_management.InterruptProcessingException()

    m = pag_node(sd1)
    m.set_model_output_block_patch(fail)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run(m, steps=1)
    assert no_hooks_left(sd1)
    assert torch.isfinite(run(pag_node(sd1), steps=1)).all()


def test_two_pags_on_different_layers(model, monkeypatch):
    """Each PAG adds its own copy; both join at the earlier of their first layers."""
    make = lambda: pag_node(pag_node(model, layers=pick(model, "output")), layers="m0", scale=1.5)
    with Rows(model) as rows:
        shared = run(make(), steps=2)
    assert rows.first == [2, 2] and rows.last == [4, 4]
    assert rel(shared, run(unshared(make, monkeypatch), steps=2)) <= 1e-5
    assert rel(shared, run(pag_node(model, layers="m0", scale=1.5), steps=2)) >= 1e-3


@pytest.mark.parametrize("where", ["middle", "output"])
def test_with_sega_concept_rows(sd1, where, monkeypatch):
    """SEGA's concept rows (their own conds) stay in the shared part; only PAG's copy joins late."""
    from test_sega_host import STEPS, build, sega_node
    from test_sega_host import run as sega_run
    stack, _ = build(sd1)
    make = lambda: pag_node(sega_node(sd1, stack), layers=pick(sd1, where))
    with Rows(sd1) as rows:
        shared = sega_run(make())
    assert rows.first == [4] * STEPS and rows.last == [5] * STEPS  # cond, uncond, 2 concepts; + PAG's copy
    assert rel(shared, sega_run(unshared(make, monkeypatch))) <= 1e-5
