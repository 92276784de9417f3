"""The Panorama node inside a real ComfyUI (COMFYUI_PATH).

The reference for composition is MultiDiffusion by definition: at every step each window is
denoised on its own by the whole guided model (ComfyUI's own sampler, one Euler step from the
window's crop to sigma 0 gives its denoised prediction) with the window's crop of every
per-pixel input (masks, ControlNet hint), and the predictions are averaged. The node must
give the same latents while batching windows in one call and running PAG/SAG/ControlNet in it.
"""
import pytest
import torch

import comfy_host as H
from attnguide.guidance import panorama as pano
from node_runs import rel

TOL = 1e-4
EFFECT = 1e-3
SIGMAS = [8.0, 3.0, 1.0, 0.0]


def panorama(model, window=128, stride=64, wrap="horizontal", weights="uniform", batch=4):
    from attnguide.nodes.panorama import Panorama
    return Panorama.execute(model, window_width=window, window_height=window, stride=stride, wrap=wrap, weights=weights, window_batch=batch).result[0]


def pag(model, scale=3.0):
    from attnguide.nodes.pag import PerturbedAttentionGuidance
    return PerturbedAttentionGuidance.execute(model, scale=scale, adaptive_scale=0.0, layers="m0", rescale=0.0, start_percent=0.0, end_percent=1.0).result[0]


def sag(model, scale=0.75):
    from attnguide.nodes.sag import SelfAttentionGuidance
    return SelfAttentionGuidance.execute(model, scale=scale, blur_sigma=1.0, threshold=1.0, layer="m0.0", start_percent=0.0, end_percent=1.0).result[0]


def sample(model, noise, pos, neg, cfg=5.0, sigmas=SIGMAS, seed=0):
    """ComfyUI's Euler from noise * sigmas[0]; the result in the model's latent space."""
    import comfy.sample
    import comfy.samplers
    out = comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.sampler_object("euler"), torch.tensor(sigmas),
                                     pos, neg, torch.zeros_like(noise), disable_pbar=True, seed=seed)
    return model.model.latent_format.process_in(out)


def denoised(model, x, sigma, pos, neg, cfg):
    """The guided model's denoised prediction of x at sigma: ComfyUI's Euler, one step to 0."""
    import comfy.sample
    import comfy.samplers
    lf = model.model.latent_format
    out = comfy.sample.sample_custom(model, torch.zeros_like(x), cfg, comfy.samplers.sampler_object("euler"),
                                     torch.tensor([sigma, 0.0]), pos, neg, lf.process_out(x), disable_pbar=True, seed=0)
    return lf.process_in(out)


def reference(model, noise, conds_for, cfg=5.0, window=16, stride=8, wrap=(False, True), sigmas=SIGMAS):
    """MultiDiffusion by hand: every window denoised alone, uniform average, Euler."""
    x = noise * sigmas[0]
    windows = pano.layout(*x.shape[-2:], (window, window), (stride, stride), wrap)
    for sigma, sigma_next in zip(sigmas, sigmas[1:]):
        blend = pano.Blend(x)
        for w in windows:
            pos, neg = conds_for(w)
            blend.add(denoised(model, pano.crop(x, [w]), sigma, pos, neg, cfg), [w], torch.ones(w.height, w.width))
        d = blend.result()
        x = d + (x - d) * (sigma_next / sigma)
    return x


@pytest.fixture(scope="module")
def setup(sd1):
    pos, neg = H.conds(sd1)
    noise = torch.randn(2, 4, 16, 40, generator=torch.Generator().manual_seed(5))
    return sd1, pos, neg, noise


def test_panorama_with_pag_is_pag_per_window(setup):
    model, pos, neg, noise = setup
    ours = sample(pag(panorama(model, batch=3)), noise, pos, neg)
    ref = reference(pag(model), noise, lambda w: (pos, neg))
    plain_windows = reference(model, noise, lambda w: (pos, neg))
    assert rel(ours, ref) <= TOL
    assert rel(ref, plain_windows) >= EFFECT  # PAG acts in every window
    # the node order does not matter
    assert rel(sample(panorama(pag(model), batch=3), noise, pos, neg), ours) <= 1e-5


def test_panorama_with_sag_is_sag_per_window(setup):
    model, pos, neg, noise = setup
    noise = noise[:1]
    ours = sample(sag(panorama(model, batch=5)), noise, pos, neg)
    ref = reference(sag(model), noise, lambda w: (pos, neg))
    assert rel(ours, ref) <= TOL
    assert rel(ref, reference(model, noise, lambda w: (pos, neg))) >= EFFECT


def test_panorama_pag_calls_per_step(setup):
    """Windows are batched: one UNet call per window batch, PAG's rows in the same call."""
    model, pos, neg, noise = setup
    import comfy.patcher_extension as pe
    m = pag(panorama(model, batch=3))
    calls = []

    def spy(executor, x, *args, **kwargs):
        calls.append(tuple(x.shape))
        return executor(x, *args, **kwargs)

    m.add_wrapper_with_key(pe.WrappersMP.APPLY_MODEL, "test_spy", spy)
    sample(m, noise[:1], pos, neg, sigmas=[8.0, 0.0])
    # 5 windows of 16x16 in batches of 3 (then 2): cond + uncond + PAG rows
    assert calls == [(9, 4, 16, 16), (6, 4, 16, 16)]


def test_window_batch_and_wrap(setup):
    model, pos, neg, noise = setup
    one = sample(panorama(model, batch=1), noise, pos, neg)
    many = sample(panorama(model, batch=4), noise, pos, neg)
    plain = sample(panorama(model, wrap="none", batch=4), noise, pos, neg)
    feathered = sample(panorama(model, weights="feathered", batch=4), noise, pos, neg)
    assert rel(many, one) <= 1e-5
    assert rel(plain, one) >= EFFECT and rel(feathered, one) >= EFFECT


def test_input_model_untouched(setup):
    import copy
    model, pos, neg, noise = setup
    before = sample(model, noise[:1], pos, neg, sigmas=[8.0, 0.0])
    options, wrappers = copy.deepcopy(model.model_options), copy.deepcopy(model.wrappers)
    stacked = pag(panorama(sag(model)))
    sample(stacked, noise[:1], pos, neg, sigmas=[8.0, 0.0])
    assert model.model_options.keys() == options.keys() and str(model.model_options) == str(options)
    assert str(model.wrappers) == str(wrappers)
    assert torch.equal(sample(model, noise[:1], pos, neg, sigmas=[8.0, 0.0]), before)


def test_bad_inputs_are_clear_errors(setup):
    model, pos, neg, noise = setup
    with pytest.raises(ValueError, match="stride"):
        panorama(model, window=128, stride=192)
    with pytest.raises(ValueError, match="window_width"):
        panorama(model, window=100)
    import node_helpers
    area = node_helpers.conditioning_set_values(pos, {"area": (8, 8, 0, 0), "strength": 1.0, "set_area_to_bounds": False})
    with pytest.raises(ValueError, match="area"):
        sample(panorama(model), noise[:1], area, neg, sigmas=[8.0, 0.0])


# --- ControlNet -------------------------------------------------------------------------------------

def tiny_controlnet():
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management as mm
    import comfy.ops
    cfg = {k: v for k, v in H.SD1_UNET.items() if k != "out_channels"}
    net = comfy.cldm.cldm.ControlNet(**cfg, hint_channels=3, dtype=torch.float32, device="cpu",
                                     operations=comfy.ops.disable_weight_init)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in net.parameters():  # no zero convolutions: the hint must visibly act
            p.copy_(torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5)
        for p in net.input_hint_block.parameters():  # and the hint's content, not only its presence
            p.mul_(4.0)
    return comfy.controlnet.ControlNet(net, load_device=mm.get_torch_device(), manual_cast_dtype=None)


def with_hint(cn, pos, neg, image):
    import nodes
    return nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, cn, image, 1.0, 0.0, 1.0)


def test_controlnet_hint_is_cropped_per_window(setup):
    model, pos, neg, noise = setup
    noise = noise[:1]
    cn = tiny_controlnet()
    # the 16x40 latent's pixels: dark on the left, bright on the right, noisy
    image = torch.rand(1, 128, 320, 3, generator=torch.Generator().manual_seed(9)) * 0.3
    image[:, :, 160:] += 0.7

    def window_hint(w):
        return torch.roll(image, (-8 * w.top, -8 * w.left), (1, 2))[:, :8 * w.height, :8 * w.width]

    ours = sample(panorama(model, batch=3), noise, *with_hint(cn, pos, neg, image))
    ref = reference(model, noise, lambda w: with_hint(cn, pos, neg, window_hint(w)))
    whole_hint = reference(model, noise, lambda w: with_hint(cn, pos, neg, image))  # what tiled nodes got wrong
    assert rel(ours, ref) <= TOL
    assert rel(ref, whole_hint) >= EFFECT
    assert rel(ref, reference(model, noise, lambda w: (pos, neg))) >= EFFECT


# --- regions --------------------------------------------------------------------------------------------

def region(pos, other, mask, bootstrap=0.0, strength=1.0):
    from attnguide.nodes.panorama_region import PanoramaRegion
    return PanoramaRegion.execute(pos, other, mask, strength, bootstrap).result[0]


def test_region_masks_are_cropped_per_window(setup):
    model, pos, neg, noise = setup
    noise = noise[:1]
    other, _ = H.conds(model, seed=4)
    mask = torch.zeros(1, 16, 40)
    mask[:, 4:12, 30:40] = 1.0  # a region across the wrap-around seam's neighbourhood
    mask[:, :, 0:3] = 0.5
    ours = sample(panorama(model, batch=4), noise, region(pos, other, mask), neg)

    def conds_for(w):
        return region(pos, other, pano.crop(mask, [w])), neg

    ref = reference(model, noise, conds_for)
    assert rel(ours, ref) <= TOL
    assert rel(ref, reference(model, noise, lambda w: (pos, neg))) >= EFFECT


def test_region_bootstrap(setup):
    model, pos, neg, noise = setup
    noise = noise[:1]
    other, _ = H.conds(model, seed=4)
    full, part = torch.ones(1, 128, 320), torch.zeros(1, 128, 320)
    part[:, :, 100:220] = 1.0  # image resolution: resized by ComfyUI
    run = lambda mask, b: sample(panorama(model), noise, region(pos, other, mask, bootstrap=b), neg)
    # under a full mask the bootstrapped input is the latent itself
    assert rel(run(full, 1.0), run(full, 0.0)) <= 1e-6
    assert rel(run(part, 0.5), run(part, 0.0)) >= EFFECT
    # deterministic for a seed
    assert torch.equal(run(part, 0.5), run(part, 0.5))


def test_region_mask_of_another_aspect_is_an_error(setup):
    model, pos, neg, noise = setup
    other, _ = H.conds(model, seed=4)
    with pytest.raises(ValueError, match="Panorama Region: the mask is 64x64"):
        sample(panorama(model), noise[:1], region(pos, other, torch.ones(1, 64, 64)), neg, sigmas=[8.0, 0.0])


# --- against diffusers on the same weights ----------------------------------------------------------

def test_panorama_node_equals_diffusers_circular(comfy):
    import diffusers_in_comfy as D
    D.import_diffusers()
    from diffusers import StableDiffusionPanoramaPipeline
    unet, model = D.tiny_sd1_pair()
    schedule = D.ddim_schedule()
    pipe = D.pipeline(StableDiffusionPanoramaPipeline, unet)
    g = torch.Generator().manual_seed(1)
    pe, ne = torch.randn(1, 77, 32, generator=g), torch.randn(1, 77, 32, generator=g)
    latents = torch.randn(1, 4, 16, 80, generator=g)  # 10 windows with wrap-around
    with torch.no_grad():
        ref = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, latents=latents.clone(), height=128, width=640,
                   num_inference_steps=D.STEPS, guidance_scale=7.5, view_batch_size=4, circular_padding=True,
                   output_type="latent").images
    node = panorama(model, window=0, stride=64, wrap="horizontal", batch=4)  # window 0: SD1's native 64 latent
    ours = D.comfy_sample(node, latents, [[pe, {}]], [[ne, {}]], 7.5, schedule)
    plain = D.comfy_sample(model, latents, [[pe, {}]], [[ne, {}]], 7.5, schedule)
    assert rel(ours, ref) <= TOL
    assert rel(ref, plain) >= EFFECT


def test_sd1_and_sdxl_with_pag_do_not_depend_on_window_batch(model):
    pos, neg = H.conds(model)
    noise = torch.randn(1, 4, 16, 40, generator=torch.Generator().manual_seed(2))
    sigmas = [8.0, 2.0, 0.0]
    one = sample(pag(panorama(model, batch=1)), noise, pos, neg, sigmas=sigmas)
    many = sample(pag(panorama(model, batch=5)), noise, pos, neg, sigmas=sigmas)
    assert rel(many, one) <= 1e-5
    assert rel(one, sample(pag(model), noise, pos, neg, sigmas=sigmas)) >= EFFECT


def test_native_window_size(model):
    from attnguide.comfyui.panorama import native_window
    assert native_window(model) == (128 if model.model.adm_channels else 64)


# --- SEGA --------------------------------------------------------------------------------------------

def sega(model, momentum_scale, seeds=(11, 12)):
    from attnguide.nodes.sega import SEGAConcept, SemanticGuidance
    stack = None
    for seed, direction in zip(seeds, ("add", "remove")):
        concept, _ = H.conds(model, seed=seed)
        stack = SEGAConcept.execute(prompt="", direction=direction, scale=5.0, warmup=0, cooldown=-1, timing="steps", threshold=0.8, weight=1.0, conditioning=concept,
                                    concepts=stack).args[0]
    return SemanticGuidance.execute(model, stack, momentum_scale=momentum_scale, momentum_beta=0.4).args[0]


def test_panorama_with_sega_is_sega_per_window(setup):
    """Stateless SEGA (no momentum, no warmup) so one-step runs per window are the reference."""
    model, pos, neg, noise = setup
    noise = noise[:1]
    ours = sample(sega(panorama(model, batch=3), 0.0), noise, pos, neg)
    ref = reference(sega(model, 0.0), noise, lambda w: (pos, neg))
    assert rel(ours, ref) <= TOL
    assert rel(ref, reference(model, noise, lambda w: (pos, neg))) >= EFFECT


def test_sega_momentum_is_kept_per_window_batch(setup):
    model, pos, neg, noise = setup
    one = sample(panorama(sega(model, 0.5), batch=1), noise, pos, neg)
    many = sample(panorama(sega(model, 0.5), batch=3), noise, pos, neg)  # 5 windows: batches of 3 and 2
    assert rel(many, one) <= 1e-5
    assert rel(one, sample(panorama(sega(model, 0.0), batch=1), noise, pos, neg)) >= EFFECT


def test_bootstrapped_region_rows_see_the_latent_only_under_their_mask(setup):
    """Inside the UNet call: while bootstrapping, the region's rows equal the other rows where its
    (window-cropped) mask is 1 and hold the flat noised background where it is 0; afterwards they
    equal them everywhere."""
    import comfy.patcher_extension as pe
    model, pos, neg, noise = setup
    other, _ = H.conds(model, seed=4)
    mask = torch.zeros(1, 16, 40)
    mask[:, :, 20:] = 1.0
    m = panorama(model, batch=5)
    seen = []

    def spy(executor, x, *args, **kwargs):
        to = kwargs.get("transformer_options", args[4] if len(args) > 4 else {})
        seen.append((x.clone(), list(to["cond_or_uncond"])))
        return executor(x, *args, **kwargs)

    m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, "test_spy", spy)
    sample(m, noise[:1], region(pos, other, mask, bootstrap=0.2), neg, sigmas=[8.0, 3.0, 1.0, 0.0])
    windows = pano.layout(16, 40, (16, 16), (8, 8), (False, True))
    cropped = pano.crop(mask, windows)[:, None].expand(-1, 4, -1, -1).bool()
    assert len(seen) == 3  # one call per step: 5 windows x (base, region, negative)
    for step, (x, labels) in enumerate(seen):
        assert sorted(labels) == [0, 0, 1]
        chunks = x.chunk(3)
        plain = chunks[labels.index(1)]
        positives = [c for c, l in zip(chunks, labels) if l == 0]
        differs = [bool((c != plain).any()) for c in positives]
        if step == 0:
            assert sorted(differs) == [False, True]
            boot = positives[differs.index(True)]
            assert torch.equal(boot[cropped], plain[cropped])
            assert bool((boot[~cropped] != plain[~cropped]).all())
        else:
            assert differs == [False, False]
