"""attnguide's Attend-and-Excite core against diffusers' StableDiffusionAttendAndExcitePipeline
on a tiny random SD1-shaped UNet, same noise, DDIM (ours: Euler on DDIM's sigmas, the latent
change carried to the sampler by guidance.latent_update.moved_latent_denoised).

Thresholds sit at early steps so the iterative refinement runs; each case also checks that
exciting moved the reference's own result, so equality is not met by a no-op.
"""
import pytest
import torch

pytest.importorskip("diffusers", reason="the reference tests need diffusers (requirements-test.txt)")

from diffusers import StableDiffusionAttendAndExcitePipeline

from attnguide.guidance.attend_excite import ExciteSettings

import attend_excite_host as host
import tiny_diffusers as td
from sigma_host import ddim_schedule

TOLERANCE = 1e-4
MIN_EFFECT = 1e-3
STEPS = 4

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def unet():
    return td.sd1_unet(0)


def pipeline(unet):
    pipe = StableDiffusionAttendAndExcitePipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet,
                                                  scheduler=td.ddim(), safety_checker=None, feature_extractor=None,
                                                  requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def inputs(batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, 16, 16, generator=g), torch.randn(batch, 77, td.SD1_CONTEXT_DIM, generator=g),
            torch.randn(batch, 77, td.SD1_CONTEXT_DIM, generator=g))


def reference(unet, latents, cond, uncond, cfg, indices, **kwargs):
    return pipeline(unet)(prompt=None, token_indices=indices, latents=latents.clone(), prompt_embeds=cond,
                          negative_prompt_embeds=uncond, num_inference_steps=STEPS, guidance_scale=cfg,
                          height=128, width=128, output_type="latent", **kwargs).images


CASES = {
    # refinement at steps 0 and 1 (20 tries at step 0), updates until step 3
    "refine": dict(indices=[2, 5], thresholds={0: 0.05, 1: 0.5, 2: 0.8}, max_iter_to_alter=3, scale_factor=20),
    # one token, refinement only at step 2, a refinement after the update window
    "late_refine": dict(indices=[3], thresholds={2: 0.3}, max_iter_to_alter=2, scale_factor=50),
}


@pytest.mark.parametrize("case", CASES)
def test_equals_diffusers(unet, case):
    kw = CASES[case]
    latents, cond, uncond = inputs(1)
    ref = reference(unet, latents, cond, uncond, 7.5, kw["indices"], thresholds=kw["thresholds"],
                    max_iter_to_alter=kw["max_iter_to_alter"], scale_factor=kw["scale_factor"])
    plain = reference(unet, latents, cond, uncond, 7.5, kw["indices"], thresholds={}, max_iter_to_alter=0)
    settings = ExciteSettings(tuple(kw["indices"]), kw["max_iter_to_alter"], tuple(kw["thresholds"].items()),
                              float(kw["scale_factor"]))
    counts = {"grad": 0, "cfg": 0}
    ours = host.sample(unet, ddim_schedule(td.ddim(), STEPS), latents, cond, uncond, 7.5, settings, counts=counts)
    assert td.relative(plain, ref) >= MIN_EFFECT, "exciting did not move the reference"
    assert td.relative(ours, ref) <= TOLERANCE
    assert counts["cfg"] == STEPS


def test_batch2_each_image_on_its_own(unet):
    latents, cond, uncond = inputs(2, seed=4)
    kw = dict(thresholds={0: 0.05, 1: 0.5}, max_iter_to_alter=3, scale_factor=20)
    ref = reference(unet, latents, cond, uncond, 5.0, [[2, 5], [2, 5]], **kw)
    settings = ExciteSettings((2, 5), 3, ((0, 0.05), (1, 0.5)), 20.0)
    ours = host.sample(unet, ddim_schedule(td.ddim(), STEPS), latents, cond, uncond, 5.0, settings)
    assert td.relative(ours, ref) <= TOLERANCE
    single = host.sample(unet, ddim_schedule(td.ddim(), STEPS), latents[1:], cond[1:], uncond[1:], 5.0, settings)
    assert td.relative(ours[1:], single) <= TOLERANCE


def test_no_gradient_forward_after_the_window(unet):
    latents, cond, uncond = inputs(1)
    settings = ExciteSettings((2,), 2, ((0, 0.0),), 20.0)   # threshold 0 never refines
    counts = {"grad": 0, "cfg": 0}
    host.sample(unet, ddim_schedule(td.ddim(), STEPS), latents, cond, uncond, 7.5, settings, counts=counts)
    assert counts == {"grad": 2, "cfg": STEPS}   # the reference spends 4 grad forwards here
