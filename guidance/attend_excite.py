"""Attend-and-Excite (Chefer et al. 2023) in sigma space, equal to diffusers'
StableDiffusionAttendAndExcitePipeline.

Before the model call of step i the latent of every image is moved, on its own, so that
each excited token's cross-attention map has a strong peak. `evaluate(x)` is the host's
grad-enabled conditional forward that returns the averaged cross-attention map
(h, w, tokens) of one image; everything else is here.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .latent_update import input_space_descent


@dataclass(frozen=True)
class ExciteSettings:
    indices: tuple                                   # token positions, <|startoftext|> at 0
    max_iter_to_alter: int = 25                      # steps that get the gradient update
    thresholds: tuple = ((0, 0.05), (10, 0.5), (20, 0.8))   # (step, threshold): iterative refinement
    scale_factor: float = 20.0
    scale_range: tuple = (1.0, 0.5)
    max_refinement_steps: int = 20
    smoothing_sigma: float = 0.5
    smoothing_kernel: int = 3

    def runs_at(self, step):
        """A gradient forward is needed at this step; after the window nothing runs
        (the reference still spends one there every step)."""
        return step < self.max_iter_to_alter or step in dict(self.thresholds)

    def step_size(self, step, steps):
        start, end = self.scale_range
        fraction = step / (steps - 1) if steps > 1 else 0.0
        return self.scale_factor * math.sqrt(start + (end - start) * fraction)


def gaussian_kernel(size, sigma):
    """The reference's kernel: exp(-((x - mu) / (2 sigma))^2), so its std is sigma * sqrt(2)."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-((coords / (2 * sigma)) ** 2))
    k = g[:, None] * g[None, :]
    return k / k.sum()


def token_maps(attention, indices, settings):
    """Smoothed maps (len(indices), h, w) of the excited tokens: the text tokens' attention
    (without <|startoftext|> and the last position) * 100, softmaxed over tokens."""
    text = torch.softmax(attention[:, :, 1:-1] * 100, dim=-1)
    kernel = gaussian_kernel(settings.smoothing_kernel, settings.smoothing_sigma).to(text)[None, None]
    pad = settings.smoothing_kernel // 2
    maps = torch.stack([text[:, :, i - 1] for i in indices])[:, None]
    return F.conv2d(F.pad(maps, (pad,) * 4, mode="reflect"), kernel)[:, 0]


def excite_loss(maps):
    """max over tokens of max(0, 1 - peak); ties go to the first token, as in the reference."""
    losses = [1.0 - m.max() for m in maps]
    worst = max(losses, key=_value)
    return worst.clamp(min=0.0)


def _value(t):
    return float(t.detach())


def excite_latent(x, step, steps, c_in, settings, evaluate):
    """Attend-and-Excite's change of one image's latent x (batch 1) before step `step`.

    Returns (x', maps of the last evaluation or None, loss). c_in is the host's input
    scale (model input u = c_in * x); the reference's updates are made on u."""
    if not settings.runs_at(step):
        return x, None, None
    alpha = settings.step_size(step, steps)

    def measure(x):
        x = x.detach().requires_grad_(True)
        maps = token_maps(evaluate(x), settings.indices, settings)
        return x, maps, excite_loss(maps)

    def descend(x, loss):
        (grad,) = torch.autograd.grad(loss, [x])
        return input_space_descent(x.detach(), grad, alpha, c_in)

    x, maps, loss = measure(x)
    threshold = dict(settings.thresholds).get(step)
    if threshold is not None and _value(loss) > 1.0 - threshold:
        target = max(0.0, 1.0 - threshold)
        iteration = 0
        while _value(loss) > target:
            iteration += 1
            if iteration > 1:  # the first try measures where we already are
                x, maps, loss = measure(x)
            if _value(loss) != 0:
                x = descend(x, loss)
            if iteration >= settings.max_refinement_steps:
                break
        x, maps, loss = measure(x)
    if step < settings.max_iter_to_alter and _value(loss) != 0:
        x = descend(x, loss)
    return x.detach(), maps.detach(), _value(loss)
