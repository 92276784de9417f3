"""guidance: schedule windows, SAG's mask/blur/degrade steps, PAG's scale, guidance rescale, sigma space."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from attnguide.attention.step_window import Schedule, step_index
from attnguide.guidance import pag, sag
from attnguide.guidance.rescale import rescale_denoised, rescale_noise
from attnguide.guidance.sigma_space import from_eps, to_eps


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- schedule ---------------------------------------------------------------------------------------

SIGMAS = [14.6, 7.0, 3.0, 1.0, 0.0]


@pytest.mark.parametrize("sigma, step", [(14.6, 0), (7.0, 1), (3.0, 2), (1.0, 3),
                                         (7.0 * (1 - 1e-7), 1), (7.0 * (1 + 1e-7), 1)])
def test_step_index_exact_sigmas(sigma, step):
    assert step_index(SIGMAS, sigma) == (step, 4)


@pytest.mark.parametrize("sigma, step", [(10.0, 0), (5.0, 1), (2.0, 2), (0.5, 3), (1e-3, 3), (20.0, 0)])
def test_step_index_between_sigmas_belongs_to_the_step_it_is_inside(sigma, step):
    """Heun / DPM 2S evaluate between schedule sigmas: the step whose interval holds them."""
    assert step_index(SIGMAS, sigma) == (step, 4)


def test_step_index_tensors_and_degenerate_schedules():
    assert step_index(torch.tensor(SIGMAS), torch.tensor(3.0)) == (2, 4)
    assert step_index([5.0], 5.0) == (0, 1)
    assert step_index([5.0, 0.0], 5.0) == (0, 1)
    # img2img: the schedule starts lower, steps count from its first real step
    assert step_index([3.0, 1.0, 0.0], 3.0) == (0, 2)
    assert step_index([3.0, 1.0, 0.0], 1.0) == (1, 2)


def test_schedule_default_is_always_on():
    s = Schedule()
    assert all(s.active(step, 10, sigma) for step in range(10) for sigma in (100.0, 1.0, 0.0))
    assert not Schedule(0.0, 0.5).active(5, 10, 1.0)


def test_schedule_step_window():
    s = Schedule(0.25, 0.75)
    assert [s.active(i, 4, 1.0) for i in range(4)] == [False, True, True, False]
    s = Schedule(0.3, 0.6)
    assert [s.active(i, 10, 1.0) for i in range(10)] == [i in (3, 4, 5) for i in range(10)]
    # start_percent 0.5 of 3 steps: only the step starting at 2/3
    assert [Schedule(0.5, 1.0).active(i, 3, 1.0) for i in range(3)] == [False, False, True]
    # end_percent 1 covers the last step, start == end covers none
    assert Schedule(0.0, 1.0).active(9, 10, 1.0)
    assert not any(Schedule(0.5, 0.5).active(i, 10, 1.0) for i in range(10))
    # a 1/3 boundary that floats cannot hit exactly
    assert [Schedule(1 / 3, 2 / 3).active(i, 3, 1.0) for i in range(3)] == [False, True, False]


def test_schedule_sigma_window_is_inclusive():
    s = Schedule(sigma_max=5.0, sigma_min=1.0)
    assert [s.active(0, 10, sigma) for sigma in (6.0, 5.0, 3.0, 1.0, 0.5)] == [False, True, True, True, False]
    both = Schedule(0.5, 1.0, sigma_max=5.0)
    assert not both.active(2, 10, 3.0) and not both.active(8, 10, 6.0) and both.active(8, 10, 3.0)


@pytest.mark.parametrize("kwargs", [dict(start_percent=0.6, end_percent=0.5), dict(start_percent=-0.1),
                                    dict(end_percent=1.1), dict(sigma_min=2.0, sigma_max=1.0)])
def test_schedule_validation(kwargs):
    with pytest.raises(ValueError):
        Schedule(**kwargs)


# --- SAG: grid, mask ------------------------------------------------------------------------------------------

def test_grid_shape_halves_rounding_up():
    assert sag.grid_shape(256, (16, 16)) == (16, 16)
    assert sag.grid_shape(64, (16, 16)) == (8, 8)
    assert sag.grid_shape(16 * 24 // 4, (16, 24)) == (8, 12)
    # 13x17 latent: 7x9 after one downsample, 4x5 after two, 2x3 after three
    assert sag.grid_shape(63, (13, 17)) == (7, 9)
    assert sag.grid_shape(20, (13, 17)) == (4, 5)
    assert sag.grid_shape(6, (13, 17)) == (2, 3)
    assert sag.grid_shape(1, (13, 17)) == (1, 1)


def test_grid_shape_matches_a_unet_downsampling_chain():
    """The grid SD's stride-2 3x3 convs (padding 1) produce, for odd and even latent sizes."""
    down = nn.Conv2d(1, 1, 3, stride=2, padding=1)
    for hw in [(13, 17), (16, 24), (9, 9), (15, 32)]:
        x = torch.zeros(1, 1, *hw)
        for _ in range(3):
            x = down(x)
            assert sag.grid_shape(x.shape[-2] * x.shape[-1], hw) == tuple(x.shape[-2:])


def test_grid_shape_prefers_the_hosts_activation_shape():
    assert sag.grid_shape(63, (13, 17), grid_hw=(9, 7)) == (9, 7)
    assert isinstance(sag.grid_shape(63, (13, 17), grid_hw=[7, 9]), tuple)
    # a host shape that does not fit the tokens is ignored
    assert sag.grid_shape(63, (13, 17), grid_hw=(8, 8)) == (7, 9)


def test_grid_shape_impossible():
    with pytest.raises(ValueError):
        sag.grid_shape(50, (16, 16))


def test_attention_mask_thresholds_and_upsamples():
    grid, latent = (2, 3), (4, 6)
    mass = torch.tensor([[0.5, 1.0, 1.5, 2.0, 0.9, 1.01],
                         [1.0, 1.0, 1.0, 1.0, 1.0, 3.0]])
    mask = sag.attention_mask(mass, grid, latent)
    assert mask.shape == (2, 1, 4, 6) and mask.dtype == mass.dtype
    on = (mass > 1.0).float().reshape(2, 1, 2, 3)
    expected = on.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.equal(mask, expected)
    # strictly above the threshold; other thresholds
    assert mask[0, 0, 0, 2] == 0 and mask[0, 0, 0, 4] == 1
    assert torch.equal(sag.attention_mask(mass, grid, latent, threshold=1.6)[0, 0, ::2, ::2],
                       torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))


def test_attention_mask_row_major_and_as_diffusers_on_odd_latents():
    """One hot token at grid (r, c) marks that block only; on 13x17 from 7x9 the nearest upsampling
    is what diffusers' sag_masking does (F.interpolate default mode)."""
    grid, latent = (7, 9), (13, 17)
    mass = torch.zeros(1, 63)
    mass[0, 2 * 9 + 5] = 5.0
    mask = sag.attention_mask(mass, grid, latent)
    small = torch.zeros(1, 1, 7, 9)
    small[0, 0, 2, 5] = 1.0
    reference = F.interpolate(small.repeat(1, 4, 1, 1), (13, 17))    # diffusers repeats over channels first
    assert torch.equal(mask.expand(-1, 4, -1, -1), reference)
    rows, cols = mask[0, 0].nonzero(as_tuple=True)
    assert rows.min() >= 3 and cols.min() >= 9


# --- SAG: blur ----------------------------------------------------------------------------------------------

def blur_2d_reference(img, sigma, kernel_size=9):
    """The blur of diffusers' SAG pipeline written out: outer product of the 9-tap Gaussian, reflect
    padding of kernel_size // 2, one grouped 2D convolution."""
    half = (kernel_size - 1) / 2
    t = torch.linspace(-half, half, kernel_size)
    pdf = torch.exp(-0.5 * (t / sigma) ** 2)
    k1 = pdf / pdf.sum()
    k2 = torch.outer(k1, k1)
    c = img.shape[1]
    padded = F.pad(img, [kernel_size // 2] * 4, mode="reflect")
    return F.conv2d(padded, k2.expand(c, 1, kernel_size, kernel_size), groups=c)


def test_blur_impulse_response_is_the_gaussian_outer_product():
    """sigma 1: 1-D weights 1.3383e-4, 4.4318e-3, .053991, .24197, .39894 (symmetric), normalised."""
    impulse = torch.zeros(1, 1, 25, 25)     # far from the edges: no reflected copies reach the centre
    impulse[0, 0, 12, 12] = 1.0
    half = torch.tensor([1.3383e-4, 4.4318e-3, 5.3991e-2, 2.4197e-1])
    k1 = torch.cat([half, torch.tensor([0.39894]), half.flip(0)])
    k1 = k1 / k1.sum()
    torch.testing.assert_close(sag.gaussian_blur(impulse, 1.0)[0, 0, 8:17, 8:17], torch.outer(k1, k1), rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("shape", [(2, 4, 16, 16), (1, 4, 13, 17), (1, 3, 5, 5), (2, 1, 24, 9)])
def test_gaussian_blur_equals_diffusers_2d_blur(sigma, shape):
    x = randn(*shape, seed=sum(shape))
    torch.testing.assert_close(sag.gaussian_blur(x, sigma), blur_2d_reference(x, sigma), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hw", [(3, 3), (4, 4), (2, 7), (1, 1), (1, 8), (3, 11)])
def test_gaussian_blur_on_tiny_latents(hw):
    """diffusers' 9x9 reflect padding needs 5+ pixels; ours shrinks the kernel instead of crashing."""
    x = randn(2, 4, *hw, seed=3)
    y = sag.gaussian_blur(x, 1.0)
    assert y.shape == x.shape and torch.isfinite(y).all()
    const = torch.full((1, 4, *hw), 2.5)
    torch.testing.assert_close(sag.gaussian_blur(const, 2.0), const)       # normalised kernel
    if min(hw) > 1:
        assert not torch.allclose(y, x), "a 2+ pixel latent is still blurred"
        # the blur stays a symmetric filter: flipping commutes with it
        torch.testing.assert_close(sag.gaussian_blur(x.flip(-1), 1.0), y.flip(-1), rtol=1e-5, atol=1e-6)


def test_gaussian_blur_off():
    x = randn(1, 4, 8, 8)
    assert sag.gaussian_blur(x, 0.0) is x


# --- SAG: degrade and the guidance rule ------------------------------------------------------------------------

def test_degrade_blurs_only_where_masked():
    d = randn(2, 4, 16, 16, seed=1)
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, 0, 4:12, 2:9] = 1
    out = sag.degrade(d, mask, 1.0)
    blurred = sag.gaussian_blur(d, 1.0)
    on = mask.bool().expand_as(d)
    assert torch.equal(out[~on], d[~on])
    torch.testing.assert_close(out[on], blurred[on])
    assert torch.equal(out[1], d[1])


def test_sag_in_sigma_space_equals_the_eps_rule():
    """diffusers: eps = eps_cfg + s * (eps_u - eps_deg), where eps_deg is the model at
    x_t_deg = add_noise(blur_mask(x0_u), eps_u). In sigma space: x_deg = degraded + sigma * eps_u and
    D_final = D_cfg + s * (degraded - D_deg) must equal x - sigma * eps."""
    sigma, s, g = 3.7, 0.75, 7.5
    x = randn(2, 4, 8, 8, seed=1) * 4
    eps_u, eps_c, eps_deg = (randn(2, 4, 8, 8, seed=i) for i in (2, 3, 4))
    d_u, d_c = x - sigma * eps_u, x - sigma * eps_c
    d_cfg = d_u + g * (d_c - d_u)
    mask = (randn(2, 1, 8, 8, seed=5) > 0).float()
    degraded = sag.degrade(d_u, mask, 1.0)
    x_deg = sag.degraded_input(x, d_u, degraded)
    torch.testing.assert_close(x_deg, degraded + sigma * eps_u)
    d_deg = x_deg - sigma * eps_deg
    out = sag.sag_guidance(d_cfg, degraded, d_deg, s)
    eps = eps_u + g * (eps_c - eps_u) + s * (eps_u - eps_deg)
    torch.testing.assert_close(out, x - sigma * eps, rtol=1e-5, atol=1e-5)


# --- PAG ------------------------------------------------------------------------------------------------

def test_pag_scale_constant_without_adaptive():
    assert pag.pag_scale(3.0, 0.0, 999) == 3.0
    assert pag.pag_scale(3.0, 0.0, 1) == 3.0
    assert pag.pag_scale(3.0, -1.0, 1) == 3.0


@pytest.mark.parametrize("t, expected", [(1000, 3.0), (999, 2.99), (751, 3.0 - 0.01 * 249), (800.5, 3.0 - 0.01 * 199.5),
                                         (701, 0.01), (700, 0.0), (501, 0.0), (1, 0.0)])
def test_pag_scale_adaptive(t, expected):
    assert pag.pag_scale(3.0, 0.01, t) == pytest.approx(expected, abs=1e-9)
    assert pag.pag_scale(3.0, 0.01, torch.tensor(t)) == pytest.approx(expected, abs=1e-6)


def test_pag_in_sigma_space_equals_the_eps_rule():
    sigma, s, g = 0.9, 3.0, 5.0
    x = randn(1, 4, 8, 8, seed=1) * 2
    eps_u, eps_c, eps_p = (randn(1, 4, 8, 8, seed=i) for i in (2, 3, 4))
    d_u, d_c, d_p = (x - sigma * e for e in (eps_u, eps_c, eps_p))
    out = pag.pag_guidance(d_u + g * (d_c - d_u), d_c, d_p, s)
    torch.testing.assert_close(out, x - sigma * (eps_u + g * (eps_c - eps_u) + s * (eps_c - eps_p)), rtol=1e-5, atol=1e-5)
    # no CFG: the cond prediction is the base
    out = pag.pag_guidance(d_c, d_c, d_p, s)
    torch.testing.assert_close(out, x - sigma * (eps_c + s * (eps_c - eps_p)), rtol=1e-5, atol=1e-5)


# --- rescale and sigma space ---------------------------------------------------------------------------------

def test_rescale_noise_by_hand():
    guided = randn(2, 3, 4, 5, seed=1) * 3 + 1
    cond = randn(2, 3, 4, 5, seed=2) * 0.5
    phi = 0.7
    out = rescale_noise(guided, cond, phi)
    for i in range(2):
        g, c = guided[i].double().flatten().tolist(), cond[i].double().flatten().tolist()

        def std(values):   # sample std, as torch.std (and diffusers) use
            mean = sum(values) / len(values)
            return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        factor = std(c) / std(g)
        expected = torch.tensor([phi * v * factor + (1 - phi) * v for v in g], dtype=torch.float64).reshape(3, 4, 5)
        torch.testing.assert_close(out[i].double(), expected, rtol=1e-5, atol=1e-6)


def test_rescale_noise_extremes():
    guided, cond = randn(2, 4, 8, 8, seed=1) * 3, randn(2, 4, 8, 8, seed=2)
    torch.testing.assert_close(rescale_noise(guided, cond, 0.0), guided)
    full = rescale_noise(guided, cond, 1.0)
    torch.testing.assert_close(full.std(dim=(1, 2, 3)), cond.std(dim=(1, 2, 3)))
    # per batch item: item 1 alone gives the same result
    torch.testing.assert_close(rescale_noise(guided[1:], cond[1:], 0.6), rescale_noise(guided, cond, 0.6)[1:])


@pytest.mark.parametrize("sigma", [2.5, torch.tensor([2.5, 0.3])])
def test_rescale_denoised_works_in_eps(sigma):
    x = randn(2, 4, 8, 8, seed=1) * 3
    denoised, cond_denoised = randn(2, 4, 8, 8, seed=2), randn(2, 4, 8, 8, seed=3)
    assert rescale_denoised(x, sigma, denoised, cond_denoised, 0.0) is denoised
    out = rescale_denoised(x, sigma, denoised, cond_denoised, 0.7)
    s = sigma.reshape(-1, 1, 1, 1) if isinstance(sigma, torch.Tensor) else sigma
    eps = rescale_noise((x - denoised) / s, (x - cond_denoised) / s, 0.7)
    torch.testing.assert_close(out, x - s * eps, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, denoised, atol=1e-3)


@pytest.mark.parametrize("sigma", [1.7, torch.tensor([1.7, 0.2, 9.0])])
def test_sigma_space_round_trip(sigma):
    x, eps = randn(3, 4, 5, 5, seed=1), randn(3, 4, 5, 5, seed=2)
    s = sigma.reshape(-1, 1, 1, 1) if isinstance(sigma, torch.Tensor) else sigma
    d = from_eps(x, sigma, eps)
    torch.testing.assert_close(d, x - s * eps)
    torch.testing.assert_close(to_eps(x, sigma, d), eps, rtol=1e-5, atol=1e-5)


# --- SEGA ---------------------------------------------------------------------------------------

def test_sega_mask_is_per_item_and_channel():
    from attnguide.guidance.sega import Concept, concept_direction
    g = torch.Generator().manual_seed(0)
    uncond = torch.zeros(2, 3, 4, 5)
    concept_eps = torch.randn(2, 3, 4, 5, generator=g)
    concept_eps[1, 2] *= 100  # one loud channel must not mask the others
    gamma = concept_direction(concept_eps, uncond, Concept(scale=2.0, threshold=0.75))
    kept = (gamma != 0).flatten(2).sum(-1)
    assert torch.equal(kept, torch.full((2, 3), 5))  # top 25% of 20 values in every (item, channel)
    assert torch.allclose(gamma[gamma != 0], 2.0 * concept_eps[gamma != 0])
    reverse = concept_direction(concept_eps, uncond, Concept(scale=2.0, threshold=0.75, reverse=True))
    assert torch.equal(reverse, -gamma)


def test_sega_warmup_mixing_and_momentum():
    from attnguide.guidance.sega import Concept, sega_guidance
    u = torch.zeros(1, 1, 2, 2)
    e1, e2 = torch.ones(1, 1, 2, 2), 2 * torch.ones(1, 1, 2, 2)
    c1, c2 = Concept(scale=1.0, warmup=0, threshold=0.0, weight=1.0), Concept(scale=1.0, warmup=2, threshold=0.0, weight=3.0)
    # step 0: only c1 warm -> normalised weights over warm concepts, no momentum in the edit
    edit, m = sega_guidance(u, [e1, e2], [c1, c2], 0, None, momentum_scale=0.5, momentum_beta=0.4)
    assert torch.allclose(edit, e1)
    assert torch.allclose(m, 0.6 * (1 * e1 + 3 * e2))  # momentum builds from step 0 over all concepts
    # step 2: all warm -> unnormalised sum plus momentum
    edit2, m2 = sega_guidance(u, [e1, e2], [c1, c2], 2, m, momentum_scale=0.5, momentum_beta=0.4)
    expected = 1 * e1 + 3 * e2 + 0.5 * m
    assert torch.allclose(edit2, expected)
    assert torch.allclose(m2, 0.4 * m + 0.6 * expected)


def test_sega_all_warm_concepts_cooled_down_adds_nothing_instead_of_nan():
    from attnguide.guidance.sega import Concept, sega_guidance
    u, e = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    cooled, waiting = Concept(warmup=0, cooldown=1, threshold=0.0), Concept(warmup=5, threshold=0.0)
    edit, _ = sega_guidance(u, [e, e], [cooled, waiting], 2)
    assert torch.equal(edit, torch.zeros_like(u))


def test_sega_concept_validation():
    from attnguide.guidance.sega import Concept
    for bad in (dict(threshold=1.0), dict(threshold=-0.1), dict(weight=-1.0), dict(warmup=-1)):
        with pytest.raises(ValueError, match="SEGA concept"):
            Concept(**bad)


def test_step_at_steps_and_percent():
    from attnguide.guidance.schedule import step_at
    assert step_at(10, "steps", 20) == 10
    assert step_at(20, "percent", 25) == 5
    assert step_at(50, "percent", 5) == 3   # step 2 is 40 %, step 3 is 60 %: first step at or past 50 %
    assert step_at(None, "percent", 5) is None
    with pytest.raises(ValueError, match="unknown step unit"):
        step_at(1, "seconds", 5)
