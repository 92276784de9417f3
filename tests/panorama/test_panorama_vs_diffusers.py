"""attnguide's MultiDiffusion core against diffusers' StableDiffusionPanoramaPipeline on a tiny
random UNet with the same noise, plus properties the reference cannot check (its circular
mode crashes above a latent height of 64).

Our side: Euler in sigma space on DDIM's sigmas (sigma_host.ddim_schedule), where each step's
denoised prediction is the blend (guidance.panorama) of the windows' CFG predictions, the
windows evaluated in batches as the ComfyUI node does.
"""
import math

import pytest
import torch

pytest.importorskip("diffusers", reason="the reference tests need diffusers (requirements-test.txt)")

from attnguide.guidance import panorama as pano

import tiny_diffusers as td
from sigma_host import ddim_schedule

TOLERANCE = 1e-4
MIN_EFFECT = 1e-3
STEPS = 3
TOKENS = 8

pytestmark = pytest.mark.filterwarnings("ignore")


def panorama_pipeline(unet):
    from diffusers import StableDiffusionPanoramaPipeline
    pipe = StableDiffusionPanoramaPipeline(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=td.ddim(),
                                           safety_checker=None, feature_extractor=None, image_encoder=None,
                                           requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def windowed_sample(unet, latents, cond, uncond, cfg, window=(64, 64), stride=(8, 8), wrap=(False, False),
                    batch=1, weights=pano.UNIFORM, steps=STEPS):
    """DDIM(eta=0) as Euler in sigma space with the MultiDiffusion denoiser."""
    schedule = ddim_schedule(td.ddim(), steps)
    x = latents * schedule.scale_in
    b = x.shape[0]
    windows = pano.layout(*x.shape[-2:], window, stride, wrap)
    weight = pano.window_weight(windows[0].height, windows[0].width, weights)
    calls = []
    for i, t in enumerate(schedule.timesteps):
        sigma, sigma_next = schedule.sigmas[i], schedule.sigmas[i + 1]
        blend = pano.Blend(x)
        for j in range(0, len(windows), batch):
            group = windows[j:j + batch]
            xs = pano.crop(x, group)
            n = xs.shape[0]
            context = torch.cat([pano.tile_batch(cond, n), pano.tile_batch(uncond, n)])
            with torch.no_grad():
                eps = unet(torch.cat([xs, xs]) / math.sqrt(sigma ** 2 + 1), t, encoder_hidden_states=context).sample
            calls.append(2 * n)
            eps_c, eps_u = eps.chunk(2)
            d_c, d_u = xs - sigma * eps_c, xs - sigma * eps_u
            blend.add(d_u + (d_c - d_u) * cfg, group, weight)
        d = blend.result()
        x = d + (x - d) * (sigma_next / sigma)
    return x * schedule.scale_out, calls


@pytest.fixture(scope="module")
def unet():
    return td.sd1_unet(seed=0)


@pytest.fixture(scope="module")
def pipe(unet):
    return panorama_pipeline(unet)


def inputs(batch, height, width, seed=1):
    noise = td.randn((batch, 4, height, width), seed)
    return noise, td.randn((batch, TOKENS, td.SD1_CONTEXT_DIM), seed + 1), td.randn((batch, TOKENS, td.SD1_CONTEXT_DIM), seed + 2)


CASES = {
    # 16x96 latent: 5 windows of 16x64 (12 with wrap-around)
    "plain": dict(circular=False, view_batch=1),
    "circular_view_batch4": dict(circular=True, view_batch=4),
}
# Not compared: a batch of 2 images. diffusers interleaves the latents (repeat_interleave) but not
# the embeddings ([negatives, positives] per view), so there each row pairs with the wrong prompt.


@pytest.mark.parametrize("case", CASES)
def test_panorama_matches_diffusers(unet, pipe, case):
    c = CASES[case]
    noise, pe, ne = inputs(1, 16, 96)
    with torch.no_grad():
        ref = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, latents=noise.clone(), height=128, width=768,
                   num_inference_steps=STEPS, guidance_scale=7.5, view_batch_size=c["view_batch"],
                   circular_padding=c["circular"], output_type="latent").images
    ours, calls = windowed_sample(unet, noise, pe, ne, 7.5, wrap=(False, c["circular"]), batch=c["view_batch"])
    windows = 12 if c["circular"] else 5
    assert len(calls) == STEPS * math.ceil(windows / c["view_batch"])
    whole, _ = windowed_sample(unet, noise, pe, ne, 7.5, window=(16, 96))  # one window: plain sampling
    diff, effect = td.relative(ours, ref), td.relative(ref, whole)
    print(f"panorama {case}: relative difference {diff:.2e}, effect of the windows {effect:.2e}")
    assert diff <= TOLERANCE
    assert effect >= MIN_EFFECT


def test_circular_differs_from_plain_at_the_seam(unet):
    noise, pe, ne = inputs(1, 16, 40)
    kw = dict(window=(16, 16), stride=(8, 8), steps=2)
    plain, _ = windowed_sample(unet, noise, pe, ne, 7.5, **kw)
    circular, _ = windowed_sample(unet, noise, pe, ne, 7.5, wrap=(False, True), **kw)
    assert td.relative(circular, plain) >= MIN_EFFECT


@pytest.mark.parametrize("weights", [pano.UNIFORM, pano.FEATHERED])
def test_window_batch_does_not_change_the_result(unet, weights):
    noise, pe, ne = inputs(1, 24, 40)
    kw = dict(window=(16, 16), stride=(8, 8), wrap=(False, True), weights=weights, steps=2)
    one, _ = windowed_sample(unet, noise, pe, ne, 5.0, batch=1, **kw)
    many, calls = windowed_sample(unet, noise, pe, ne, 5.0, batch=7, **kw)
    assert calls[:2] == [14, 6]  # 2 x 5 windows in batches of 7, cond + uncond
    assert td.relative(many, one) <= 1e-5


def test_feathered_weights_change_the_result(unet):
    noise, pe, ne = inputs(1, 16, 40)
    kw = dict(window=(16, 16), stride=(8, 8), steps=2)
    uniform, _ = windowed_sample(unet, noise, pe, ne, 5.0, **kw)
    feathered, _ = windowed_sample(unet, noise, pe, ne, 5.0, weights=pano.FEATHERED, **kw)
    assert td.relative(feathered, uniform) >= MIN_EFFECT


@pytest.mark.parametrize("size,window,wrap", [((72, 24), (64, 16), (False, True)), ((24, 24), (16, 16), (True, True))],
                         ids=["tall_horizontal", "both"])
def test_wrap_around_is_shift_equivariant(unet, size, window, wrap):
    """tall_horizontal is where the reference crashes (latent taller than 64, circular). With
    wrap-around every window has a shifted twin, so rolling the noise by a stride rolls the result."""
    noise, pe, ne = inputs(1, *size, seed=3)
    kw = dict(window=window, stride=(8, 8), wrap=wrap, batch=8, steps=2)
    out, _ = windowed_sample(unet, noise, pe, ne, 5.0, **kw)
    assert out.shape == noise.shape and torch.isfinite(out).all()
    dims = (-1,) if not wrap[0] else (-2, -1)
    shifts = (8,) * len(dims)
    rolled, _ = windowed_sample(unet, torch.roll(noise, shifts, dims), pe, ne, 5.0, **kw)
    assert td.relative(rolled, torch.roll(out, shifts, dims)) <= 1e-5
    # without wrap-around the same roll does not commute: the check has teeth
    plain, _ = windowed_sample(unet, noise, pe, ne, 5.0, **{**kw, "wrap": (False, False)})
    plain_rolled, _ = windowed_sample(unet, torch.roll(noise, shifts, dims), pe, ne, 5.0, **{**kw, "wrap": (False, False)})
    assert td.relative(plain_rolled, torch.roll(plain, shifts, dims)) >= MIN_EFFECT
