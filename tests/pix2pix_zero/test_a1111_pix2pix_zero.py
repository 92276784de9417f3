"""Pix2Pix-Zero's A1111 script (scripts/attnguide_pix2pix_zero.py) in img2img inside the A1111
double against tests/support/pix2pix_zero_host.py (the core on the sigma-space host, equal
to diffusers' StableDiffusionPix2PixZeroPipeline invert + edit) on twin UNets, k-diffusion Euler
on DDIM's sigmas. Also: guidance moved the result, nothing stays patched after a run, an
interrupt or an error, and bad input is refused with a message."""
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("ldm.modules.diffusionmodules.openaimodel", reason="needs stable-diffusion-sdkit (ships A1111's ldm)")
pytest.importorskip("diffusers", reason="the reference needs diffusers")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webui_case import MIN_EFFECT, TOLERANCE, a1, a1111_schedule, leftovers, load_script, models, refused, td  # noqa: E402,F401
import a1111_img2img as i2i  # noqa: E402
import pix2pix_zero_host as reference_host  # noqa: E402
from attnguide.guidance import pix2pix_zero as p2pz  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
TITLE = "Pix2Pix-Zero (AttnGuide)"
SOURCE, TARGET = "a cat.\na small cat.", "a dog.\na small dog."
DIM = td.SD1_CONTEXT_DIM


@pytest.fixture
def host(models):
    unet, _, alphas = models
    h = a1.install(a1.SDModel(unet, alphas))
    i2i.install_common(h)
    h.classes = load_script("attnguide_pix2pix_zero")
    for i, text in enumerate(SOURCE.splitlines() + TARGET.splitlines()):
        h.shared.sd_model.embeddings[text] = td.randn((77, DIM), 40 + i)
    yield h
    a1.uninstall(h)


AMOUNT = 2.0  # the default 0.1 moves this tiny random model's result by only ~2e-4; the numbers are checked at 2

def p2pz_args(amount=AMOUNT, source=SOURCE, target=TARGET, seed=3):
    return [True, source, target, amount, 20.0, 20.0, 2, 2, seed]


def inputs(batch, seed=1):
    latents = td.randn((batch, 4, 16, 16), seed)
    return latents, td.randn((batch, 77, DIM), seed + 1), td.randn((batch, 77, DIM), seed + 2)


def img2img(h, args, latents, cond, uncond, cfg=7.5, fail_at=None, interrupt_at=None, is_img2img=True,
            other_extension=None):
    """One img2img generation (denoising strength 1) through the scripts; latents: the clean
    init latents in VP units at the schedule's last level, as the reference takes them.
    other_extension(sampler): patches the sampler before the scripts run, as another extension would."""
    runner = a1.ScriptRunner(h.classes, is_img2img=is_img2img)
    script_args = runner.defaults()
    for script in runner.scripts:
        if script.title() in args:
            script_args[script.args_from:script.args_to] = args[script.title()]
    sd_model = h.shared.sd_model
    p = a1.Processing(sd_model, runner, script_args, cfg_scale=cfg, steps=4, prompt="a cat")
    schedule = a1111_schedule("euler", sd_model.alphas_cumprod)
    p.denoising_strength, p.init_images = 1.0, ["image"]
    p.init_latent = latents / schedule.scale_out
    p.c, p.uc = a1.conditioning(cond), a1.unconditioning(uncond)
    p.image_conditioning = latents.new_zeros(latents.shape[0], 5, 1, 1)
    p.sampler = sampler = i2i.KDiffusionSampler(h.shared, h.callbacks, "Euler", schedule.sigmas)
    if other_extension is not None:
        other_extension(sampler)
    h.shared.state.interrupt_at = interrupt_at
    if fail_at is not None:
        step = sampler.callback_state

        def fail(i):
            if i == fail_at:
                raise RuntimeError("a failing step")
            step(i)
        sampler.callback_state = fail
    try:
        out = i2i.process_img2img(p, p.init_latent, torch.zeros_like(latents))
    finally:
        h.shared.state.interrupt_at = None
    return out * schedule.scale_out, p, runner


def reference(models, h, latents, cond, uncond, amount, cfg=7.5, seed=3, reg=(20.0, 20.0, 2, 2)):
    _, twin, alphas = models
    schedule = a1111_schedule("euler", alphas)
    emb = h.shared.sd_model.embeddings
    direction = p2pz.edit_direction(torch.stack([emb[t] for t in SOURCE.splitlines()]),
                                    torch.stack([emb[t] for t in TARGET.splitlines()]))
    settings = p2pz.InversionSettings(*reg)
    x_t = reference_host.invert(twin, schedule, latents, cond, settings, seed)
    return reference_host.edit(twin, schedule, x_t, cond, uncond, direction, cfg, amount, dtype=torch.float16)


def clean(models, h, p):
    assert "sample_img2img" not in p.sampler.__dict__ and "forward" not in p.sampler.model_wrap_cfg.__dict__
    assert leftovers(models[0], h) == []
    assert all(prm.grad is None for prm in models[0].parameters())


@pytest.mark.parametrize("batch, cfg", [(1, 7.5), (2, 5.0)])
def test_pix2pix_zero_script_equals_core(models, host, batch, cfg):
    latents, cond, uncond = inputs(batch)
    ours, p, runner = img2img(host, {TITLE: p2pz_args()}, latents, cond, uncond, cfg)
    assert not runner.errors and not host.callbacks.errors, (runner.errors, host.callbacks.errors)
    clean(models, host, p)
    ref = reference(models, host, latents, cond, uncond, AMOUNT, cfg)
    unguided = reference(models, host, latents, cond, uncond, 0.0, cfg)
    plain, _, _ = img2img(host, {}, latents, cond, uncond, cfg)
    diff = td.relative(ours, ref)
    effect, edit = td.relative(ref, unguided), td.relative(ours, plain)
    print(f"pix2pix_zero batch {batch} cfg {cfg}: relative difference {diff:.2e}, guidance effect {effect:.2e}, "
          f"vs plain img2img {edit:.2e}")
    assert diff <= TOLERANCE and effect >= MIN_EFFECT and edit >= MIN_EFFECT
    assert p.extra_generation_params["AttnGuide P2PZ guidance_amount"] == AMOUNT


def test_interrupt_and_error_leave_nothing_patched(models, host):
    latents, cond, uncond = inputs(1)
    _, p, runner = img2img(host, {TITLE: p2pz_args()}, latents, cond, uncond, interrupt_at=2)
    assert not runner.errors
    clean(models, host, p)
    with pytest.raises(RuntimeError, match="a failing step"):
        img2img(host, {TITLE: p2pz_args()}, latents, cond, uncond, fail_at=1)
    assert leftovers(models[0], host) == []
    assert all("forward" not in m.__dict__ for m in models[0].modules())


def test_another_extensions_patches_run_and_are_handed_back(models, host):
    """Instance sample_img2img and denoiser forward set by another extension before ours: our pass
    goes through its sample_img2img, and after the run both are back, exactly."""
    latents, cond, uncond = inputs(1)
    calls = []

    def other_extension(sampler):
        def sample_img2img(*args, **kwargs):
            calls.append("sample_img2img")
            return type(sampler).sample_img2img(sampler, *args, **kwargs)

        def forward(*args, **kwargs):
            calls.append("forward")
            return type(sampler.model_wrap_cfg).forward(sampler.model_wrap_cfg, *args, **kwargs)
        sampler.sample_img2img, sampler.model_wrap_cfg.forward = sample_img2img, forward
        patches.update(sample_img2img=sample_img2img, forward=forward)

    patches = {}
    ours, p, runner = img2img(host, {TITLE: p2pz_args()}, latents, cond, uncond, other_extension=other_extension)
    assert not runner.errors, runner.errors
    assert p.sampler.__dict__["sample_img2img"] is patches["sample_img2img"]
    assert p.sampler.model_wrap_cfg.__dict__["forward"] is patches["forward"]
    assert calls.count("sample_img2img") == 1
    plain, _, _ = img2img(host, {TITLE: p2pz_args()}, latents, cond, uncond)
    assert torch.equal(ours, plain)   # the edit pass itself is ours: the other forward does not run inside it
    assert leftovers(models[0], host) == []


def test_bad_input_is_refused_with_a_message(models, host, caplog):
    latents, cond, uncond = inputs(1)
    plain, _, _ = img2img(host, {}, latents, cond, uncond)
    ours, p, runner = img2img(host, {TITLE: p2pz_args(source="  \n ")}, latents, cond, uncond)
    assert "source is empty" in refused(p, runner)
    assert torch.equal(ours, plain)
    clean(models, host, p)
    host.shared.sd_model.embeddings["a horse."] = td.randn((77, DIM + 8), 9)   # another text encoder's width
    _, p, runner = img2img(host, {TITLE: p2pz_args(target="a horse.")}, latents, cond, uncond)
    assert "different text encoders" in refused(p, runner)
    clean(models, host, p)


def test_timestep_sampler_and_txt2img_are_said(models, host, caplog):
    script = host.classes[0]()
    assert script.show(False) is False and script.show(True) is host.scripts.AlwaysVisible
    latents, cond, uncond = inputs(1)
    runner = a1.ScriptRunner(host.classes, is_img2img=True)
    p = a1.Processing(host.shared.sd_model, runner, runner.defaults(), steps=4)
    p.sampler = a1.Sampler(host.shared, host.callbacks, "DDIM")
    p.init_latent = latents
    script.process_before_every_sampling(p, *p2pz_args(), x=latents)
    assert any("sampler DDIM is a timestep sampler" in r.getMessage() and "pick Euler" in r.getMessage()
               for r in caplog.records)
    p.init_latent = None
    script.process_before_every_sampling(p, *p2pz_args(), x=latents)
    assert any("off in txt2img" in r.getMessage() for r in caplog.records)
    p.close()
    assert "sample_img2img" not in p.sampler.__dict__ and leftovers(models[0], host) == []
