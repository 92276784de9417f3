"""The A1111 scripts (scripts/attnguide_sag.py, attnguide_pag.py) inside the A1111 test double
(a1111_double.py) on a real ldm UNetModel, against the core's diffusers-equal composition
(test_sag_pag_vs_diffusers.py: SigmaHost + sag_method/pag_method, equal to diffusers' SAG/PAG pipelines)
on a diffusers UNet holding the same weights.

Each generation must match to 1e-4 (relative), the method must move the result (>= 1e-3),
and no hook, instance forward or callback may stay behind.
"""
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("ldm.modules.diffusionmodules.openaimodel", reason="needs stable-diffusion-sdkit (ships A1111's ldm)")
pytest.importorskip("diffusers", reason="the reference needs diffusers")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webui_case import (MIN_EFFECT, STEPS, TOLERANCE, a1, generate, host, inputs, leftovers, models, parse_layers,  # noqa: E402,F401
                        reference, refused, td, host_layers, pag_method, sag_method)

pytestmark = pytest.mark.filterwarnings("ignore")


SAG_TITLE, PAG_TITLE = "Self-Attention Guidance (AttnGuide)", "Perturbed-Attention Guidance (AttnGuide)"


def sag_args(scale=0.75, blur_sigma=1.0, threshold=1.0, layer="m0.0", start=0.0, end=1.0):
    return [True, scale, blur_sigma, threshold, layer, start, end]


def pag_args(scale=3.0, adaptive=0.0, layers="m0", rescale=0.0, start=0.0, end=1.0):
    return [True, scale, adaptive, layers, rescale, start, end]


def check(name, ours, ref, off):
    diff, effect = td.relative(ours, ref), td.relative(ref, off)
    print(f"{name}: relative difference {diff:.2e}, effect {effect:.2e}")
    assert diff <= TOLERANCE, f"{name}: the A1111 script differs from the core by {diff:.3g}"
    assert effect >= MIN_EFFECT, f"{name}: the method barely moves the result ({effect:.3g})"


CASES = {
    "sag_euler": dict(sag=dict(), kind="euler"),
    "sag_ddim_eps": dict(sag=dict(), kind="ddim"),
    "sag_euler_batch2": dict(sag=dict(), batch=2),
    "sag_cfg1": dict(sag=dict(), cfg=1.0),
    "pag_euler": dict(pag=dict()),
    "pag_ddim_eps": dict(pag=dict(), kind="ddim"),
    "pag_adaptive_rescale": dict(pag=dict(adaptive=0.01, rescale=0.7)),
    "pag_two_layers_batch2": dict(pag=dict(layers="m0, d1"), batch=2),
    "pag_chunked_batches": dict(pag=dict(), batch=2, batch_cond_uncond=False),
    "sag_and_pag": dict(sag=dict(), pag=dict()),
    "sag_and_pag_ddim": dict(sag=dict(), pag=dict(), kind="ddim"),
}


@pytest.mark.parametrize("case", CASES)
def test_script_equals_core(models, host, case):
    c = {"kind": "euler", "cfg": 7.5, "batch": 1, "batch_cond_uncond": True, **CASES[case]}
    unet, twin, _ = models
    host.shared.opts.batch_cond_uncond = c["batch_cond_uncond"]
    noise, cond, uncond = inputs(c["batch"])
    args, methods = {}, []
    layers = host_layers(twin)
    if "sag" in c:
        args[SAG_TITLE] = sag_args(**c["sag"])
        methods.append(sag_method(parse_layers("m0.0", layers)[0], 0.75))
    if "pag" in c:
        args[PAG_TITLE] = pag_args(**c["pag"])
        pc = {"adaptive": 0.0, "rescale": 0.0, "layers": "m0", **c["pag"]}
        methods.append(pag_method(parse_layers(pc["layers"], layers), 3.0, pc["adaptive"], pc["rescale"], key=f"pag.{len(methods)}"))
    ours, p, runner = generate(host, args, c["kind"], c["cfg"], c["batch"], cond, uncond, noise)
    assert not runner.errors and not host.callbacks.errors, (runner.errors, host.callbacks.errors)
    assert leftovers(unet, host) == []
    assert p.closed and p.close.__class__.__name__ == "_CloseSessionFirst"
    off, _, _ = generate(host, {}, c["kind"], c["cfg"], c["batch"], cond, uncond, noise)
    check(case, ours, reference(models, c["kind"], noise, cond, uncond, c["cfg"], methods), off)


def test_plain_generation_equals_core_host(models, host):
    """The double itself: no method, A1111's k-diffusion Euler and DDIM equal the sigma-space host."""
    noise, cond, uncond = inputs(1)
    for kind in ("euler", "ddim"):
        ours, _, _ = generate(host, {}, kind, 7.5, 1, cond, uncond, noise)
        assert td.relative(ours, reference(models, kind, noise, cond, uncond, 7.5, [])) <= TOLERANCE


def test_and_prompt_weights(models, host):
    """An AND prompt of the same text twice at weights 0.5/0.5 is the plain prompt: PAG's rows
    (a copy of every cond row) and its combination follow the AND weights."""
    noise, cond, uncond = inputs(1)
    plain, _, _ = generate(host, {PAG_TITLE: pag_args(rescale=0.5)}, "euler", 7.5, 1, cond, uncond, noise)
    twice, _, _ = generate(host, {PAG_TITLE: pag_args(rescale=0.5)}, "euler", 7.5, 1, [[cond[0], cond[0]]], uncond, noise,
                           weights=[[0.5, 0.5]])
    assert td.relative(twice, plain) <= 1e-5
    assert leftovers(models[0], host) == []


def test_interrupt_and_error_leave_nothing(models, host):
    unet = models[0]
    noise, cond, uncond = inputs(1)
    host.shared.state.interrupt_at = 1
    generate(host, {SAG_TITLE: sag_args(), PAG_TITLE: pag_args()}, "euler", 7.5, 1, cond, uncond, noise)
    host.shared.state.interrupt_at = None
    assert leftovers(unet, host) == []

    def fail(i):
        raise RuntimeError("sampler failed")

    with pytest.raises(RuntimeError, match="sampler failed"):
        generate(host, {SAG_TITLE: sag_args(), PAG_TITLE: pag_args()}, "euler", 7.5, 1, cond, uncond, noise, sample_hook=fail)
    assert leftovers(unet, host) == []


def test_stale_session_is_closed_by_the_next_generation(models, host):
    """A generation whose p was never closed (a host path without closing()) is cleaned up
    when the next one starts: its hooks are found by type."""
    from attnguide.scripts.attnguide_webui.a1111 import router as a1111_router
    unet = models[0]
    p = a1.Processing(host.shared.sd_model, None, [])
    stale = a1111_router.session_for(p, torch.zeros(1))
    from attnguide.scripts.attnguide_webui.a1111.backend import install
    install(stale, "pag", dict(scale=3.0, adaptive_scale=0.0, layers="m0", rescale=0.0, start_percent=0.0, end_percent=1.0))
    assert "forward" in unet.middle_block[1].transformer_blocks[0].attn1.__dict__
    noise, cond, uncond = inputs(1)
    generate(host, {SAG_TITLE: sag_args()}, "euler", 7.5, 1, cond, uncond, noise)
    assert stale.closed and leftovers(unet, host) == []


def test_other_extensions_hooks_keep_working(models, host):
    """Another extension's instance forward (installed before) and forward hook on the hooked
    attn1 module still run on the rows no AttnGuide hook claims, and stay in place after."""
    unet = models[0]
    attn = unet.middle_block[1].transformer_blocks[0].attn1
    calls = {"forward": [], "hook": 0}
    original = type(attn).forward

    def their_forward(x, context=None, mask=None):
        calls["forward"].append(x.shape[0])
        return original(attn, x, context=context, mask=mask)

    attn.forward = their_forward
    handle = attn.register_forward_hook(lambda m, a, o: calls.__setitem__("hook", calls["hook"] + 1))
    try:
        noise, cond, uncond = inputs(1)
        ours, _, _ = generate(host, {PAG_TITLE: pag_args()}, "euler", 7.5, 1, cond, uncond, noise)
        # per step the main call holds cond, PAG's copy, uncond: their forward gets cond and uncond (1 row each)
        assert calls["forward"] == [1, 1] * STEPS and calls["hook"] == STEPS
        assert attn.__dict__["forward"] is their_forward
        ref = reference(models, "euler", noise, cond, uncond, 7.5,
                        [pag_method(parse_layers("m0", host_layers(models[1])), 3.0)])
        assert td.relative(ours, ref) <= TOLERANCE
    finally:
        del attn.forward
        handle.remove()
    assert leftovers(unet, host) == []


def test_wrapped_after_us_passes_through(models, host):
    """An extension that wraps our instance forward during the generation keeps its chain:
    ours is switched to pass-through at the end instead of being pulled out."""
    unet = models[0]
    attn = unet.middle_block[1].transformer_blocks[0].attn1
    from attnguide.scripts.attnguide_webui.a1111 import backend as a1111_backend
    from attnguide.scripts.attnguide_webui.a1111 import router as a1111_router
    p = a1.Processing(host.shared.sd_model, None, [])
    session = a1111_router.session_for(p, torch.zeros(1))
    a1111_backend.install(session, "pag", dict(scale=3.0, adaptive_scale=0.0, layers="m0", rescale=0.0,
                                               start_percent=0.0, end_percent=1.0))
    ours = attn.forward
    attn.forward = lambda *a, **kw: ours(*a, **kw)
    a1111_router.close_session(p)
    try:
        assert ours.session is None
        x = torch.randn(2, 16, 64)
        assert torch.equal(attn(x), type(attn).forward(attn, x))
    finally:
        del attn.forward


def test_infotext_api_order_and_paste(host):
    runner = a1.ScriptRunner(host.classes)
    sag = next(s for s in runner.scripts if s.title() == SAG_TITLE)
    names = [c.kwargs.get("elem_id") for c in runner.inputs[sag.args_from:sag.args_to]]
    assert names == ["attnguide_sag_txt2img", "attnguide_sag_txt2img_scale", "attnguide_sag_txt2img_blur_sigma",
                     "attnguide_sag_txt2img_threshold", "attnguide_sag_txt2img_layer",
                     "attnguide_sag_txt2img_start_percent", "attnguide_sag_txt2img_end_percent"]
    assert runner.defaults()[sag.args_from:sag.args_to] == [False, 0.75, 1.0, 1.0, "auto", 0.0, 1.0]
    p = a1.Processing(host.shared.sd_model, runner, runner.defaults())
    sag.process(p, *sag_args(scale=0.5, layer="u0.0"))
    assert p.extra_generation_params == {"AttnGuide SAG scale": 0.5, "AttnGuide SAG blur_sigma": 1.0,
                                         "AttnGuide SAG threshold": 1.0, "AttnGuide SAG layer": "u0.0",
                                         "AttnGuide SAG start_percent": 0.0, "AttnGuide SAG end_percent": 1.0}
    fields = dict((key if isinstance(key, str) else "enabled", comp) for comp, key in sag.infotext_fields)
    assert set(fields) == {"enabled", *p.extra_generation_params}
    enabled_from = next(key for _, key in sag.infotext_fields if callable(key))
    assert enabled_from(p.extra_generation_params) and not enabled_from({"Steps": 20})
    assert sag.paste_field_names == list(p.extra_generation_params)
    # disabled: no infotext
    p2 = a1.Processing(host.shared.sd_model, runner, runner.defaults())
    sag.process(p2, False, 0.5, 1.0, 1.0, "m0.0", 0.0, 1.0)
    assert p2.extra_generation_params == {}


def test_xyz_axes_override_and_enable(host):
    import types
    xyz = types.ModuleType("xyz_grid.py")

    class AxisOption:  # scripts/xyz_grid.py:214
        def __init__(self, label, type, apply, **kw):
            self.label, self.type, self.apply = label, type, apply

    xyz.AxisOption, xyz.axis_options = AxisOption, []
    script_class = type("XYZ", (), {"__module__": "xyz_grid.py"})
    host.scripts.scripts_data.append(types.SimpleNamespace(script_class=script_class, module=xyz))
    host.callbacks.before_ui_callback()
    host.callbacks.before_ui_callback()  # twice (UI reload): no duplicates
    labels = [o.label for o in xyz.axis_options if " SAG " in o.label or " PAG " in o.label]
    assert labels == ["[AttnGuide] SAG Scale", "[AttnGuide] SAG Blur sigma", "[AttnGuide] SAG Mask threshold",
                      "[AttnGuide] SAG Start at", "[AttnGuide] SAG End at",
                      "[AttnGuide] PAG Scale", "[AttnGuide] PAG Adaptive scale", "[AttnGuide] PAG Rescale",
                      "[AttnGuide] PAG Start at", "[AttnGuide] PAG End at"]
    runner = a1.ScriptRunner(host.classes)
    sag = next(s for s in runner.scripts if s.title() == SAG_TITLE)
    p = a1.Processing(host.shared.sd_model, runner, runner.defaults())
    import copy
    cell = copy.copy(p)
    xyz.axis_options[0].apply(cell, 0.25, [0.25])
    assert not hasattr(p, "attnguide_xyz")  # the shared original is untouched
    sag.process(cell, *runner.defaults()[sag.args_from:sag.args_to])  # disabled in the UI, on through the axis
    assert cell.extra_generation_params["AttnGuide SAG scale"] == 0.25


def test_skipped_uncond_rows_keep_the_layout(models, host):
    """A1111's NGMS (s_min_uncond) drops the uncond rows of every other step after the callback
    (sd_samplers_cfg_denoiser.py:224-231): PAG's rows in the middle survive, SAG finds its
    uncond capture missing there and leaves the step alone; nothing fails, nothing is left."""
    noise, cond, uncond = inputs(1)
    base = a1.Processing.__init__

    def with_ngms(self, *a, **kw):
        base(self, *a, **kw)
        self.s_min_uncond = 100.0

    a1.Processing.__init__ = with_ngms
    try:
        ours, _, runner = generate(host, {SAG_TITLE: sag_args(), PAG_TITLE: pag_args()}, "euler", 7.5, 1, cond, uncond, noise)
        off, _, _ = generate(host, {}, "euler", 7.5, 1, cond, uncond, noise)
    finally:
        a1.Processing.__init__ = base
    assert not runner.errors and not host.callbacks.errors, (runner.errors, host.callbacks.errors)
    assert torch.isfinite(ours).all() and td.relative(ours, off) >= MIN_EFFECT
    assert leftovers(models[0], host) == []
