"""Attend-and-Excite's host-free parts: the reference's constants, the loss, the latent
update in sigma space and the correction that carries it to an Euler/DDIM sampler."""
import math

import pytest
import torch

from attnguide.attention.cross_maps import MapStore, cross_attention_probs
from attnguide.attention.unet_levels import grid
from attnguide.guidance.attend_excite import ExciteSettings, excite_latent, excite_loss, gaussian_kernel, token_maps
from attnguide.guidance.latent_update import input_space_descent, moved_latent_denoised


def test_smoothing_kernel_is_the_references():
    k = gaussian_kernel(3, 0.5)
    one = torch.tensor([0.2119, 0.5761, 0.2119])
    assert torch.allclose(k, one[:, None] * one[None, :], atol=1e-4)


@pytest.mark.parametrize("step,size", [(0, 20.0), (10, 18.95), (20, 17.84), (49, 14.14)])
def test_step_sizes_are_the_references(step, size):
    assert ExciteSettings((1,)).step_size(step, 50) == pytest.approx(size, abs=5e-3)


def test_window_and_thresholds_decide_where_gradients_run():
    s = ExciteSettings((1,), max_iter_to_alter=2, thresholds=((5, 0.5),))
    assert [s.runs_at(i) for i in range(7)] == [True, True, False, False, False, True, False]


def test_loss_is_the_worst_token_and_zero_when_all_peak():
    maps = [torch.tensor([[0.2, 0.7]], requires_grad=True), torch.tensor([[0.3, 0.1]], requires_grad=True)]
    loss = excite_loss(maps)
    assert float(loss.detach()) == pytest.approx(0.7)
    loss.backward()
    assert maps[1].grad is not None and maps[0].grad is None
    assert float(excite_loss([torch.tensor([1.0]), torch.tensor([1.2])])) == 0.0


def test_token_maps_drop_start_and_last_position():
    attention = torch.zeros(4, 4, 6)
    attention[..., 2] = 1.0      # token 2 dominates everywhere
    maps = token_maps(attention, (2, 3), ExciteSettings((2, 3)))
    assert maps.shape == (2, 4, 4) and float(maps[0].min()) > 0.99 and float(maps[1].max()) < 0.01


def test_descent_on_the_model_input_written_for_x():
    sigma = 3.0
    c_in = 1 / math.sqrt(sigma ** 2 + 1)
    x = torch.randn(1, 4, 3, 3)
    u = (x * c_in).requires_grad_(True)
    (grad_u,) = torch.autograd.grad((u ** 3).sum(), [u])
    xg = x.clone().requires_grad_(True)
    (grad_x,) = torch.autograd.grad(((xg * c_in) ** 3).sum(), [xg])
    assert torch.allclose(input_space_descent(x, grad_x, 0.7, c_in), (u - 0.7 * grad_u).detach() / c_in, atol=1e-5)


def test_correction_makes_an_euler_step_from_x_land_where_the_step_from_x_moved_lands():
    x, moved, d = torch.randn(3, 2, 4, 4).unbind(0)
    sigma, sigma_next = 2.0, 1.2
    euler = lambda x, d: d + (x - d) * (sigma_next / sigma)
    corrected = moved_latent_denoised(x, moved, d, sigma, sigma_next)
    assert torch.allclose(euler(x, corrected), euler(moved, d), atol=1e-6)
    assert moved_latent_denoised(x, moved, d, sigma, 0.0) is d


def test_map_store_averages_layers_and_heads_of_one_resolution():
    store = MapStore(queries=4)
    q, k, v = torch.randn(1, 4, 8), torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    store.attend(q, k, v, heads=2)
    store.attend(torch.randn(1, 9, 8), k, v, heads=2)          # another resolution: not kept
    assert len(store.maps) == 1
    assert torch.allclose(store.mean(), cross_attention_probs(q, k, 2).mean(dim=1))


def test_grid_rounds_up_like_the_unet():
    assert grid(64, 64, 4) == (16, 16) and grid(13, 17, 2) == (7, 9) and grid(12, 16, 1) == (12, 16)


def test_refinement_repeats_until_the_threshold_and_lowers_the_loss():
    calls = []

    def evaluate(x):  # attention (3, 3, 4): token 1 gains on token 2 as x grows
        calls.append(1)
        logit = x.mean(dim=1)[0] * 0.05
        return torch.stack([torch.zeros_like(logit), logit, torch.zeros_like(logit), torch.zeros_like(logit)], -1)

    s = ExciteSettings((1,), max_iter_to_alter=1, thresholds=((0, 0.9),), scale_factor=0.02, max_refinement_steps=5)
    x = torch.zeros(1, 1, 3, 3)
    start = float(excite_loss(token_maps(evaluate(x), (1,), s)))
    calls.clear()
    moved, maps, loss = excite_latent(x, 0, 10, 1.0, s, evaluate)
    assert start > 0.1 and loss < start and float(moved.mean()) > 0
    assert len(calls) == 1 + 4 + 1   # first measure (reused as try 1), tries 2-5, the final measure
