"""Pix2Pix-Zero (Parmar et al. 2023) in sigma space, equal to diffusers'
StableDiffusionPix2PixZeroPipeline (`invert` and the edit call) on Euler/DDIM.

* Edit direction: mean(target sentence embeddings) - mean(source sentence embeddings),
  added to every position of the conditional prompt embedding of every image.
* Inversion: DDIM run upwards (an Euler step in sigma space towards higher noise), the
  noise prediction pulled towards white noise by the auto-correlation and KL penalties.
  Each image is regularised on its own statistics and its own seeded rolls, so an image
  inverts the same whatever batch it is in.
* Edit: the reference pass (source prompt) and the edit pass (prompt + direction) run in
  lockstep, so the loss of step i needs only the reference maps of step i: one step of
  maps is held, never the whole run. Per step both CFG halves of the edit latent take one
  gradient step against sum_layers mean_(half, head) sum_(query, key) (A - A_ref)^2; the
  uncond half becomes the next latent, the cond half only feeds this step's prediction.

The host supplies model calls (denoised predictions D = x - sigma * eps) and the
cross-attention probabilities of its attn2 layers; everything else is here.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .latent_update import input_space_descent, moved_latent_denoised

# Sentences a single word is expanded with (the paper builds its directions from many
# captions containing the word; these stand in for a captioning model).
TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a cropped photo of a {}.",
    "a photo of the {}.",
    "a good photo of a {}.",
    "a photo of one {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
    "a painting of a {}.",
    "a drawing of a {}.",
    "a {} in the wild.",
    "a {} outdoors.",
)


def sentences(text, name):
    """The sentences of `text`: one per line; a single line without a full stop is a word
    or short phrase, expanded with TEMPLATES."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{name} is empty: write one sentence per line (e.g. 'a photo of a cat.') or a single word "
                         "('cat'), which is expanded with built-in sentence templates.")
    if len(lines) == 1 and not lines[0].endswith((".", "!", "?")):
        return [t.format(lines[0]) for t in TEMPLATES]
    return lines


def edit_direction(source, target):
    """(1, tokens, width): mean of the target embeddings - mean of the source embeddings.
    source, target: (sentences, tokens, width) from one text encoder."""
    for name, e in (("source", source), ("target", target)):
        if e.ndim != 3 or e.shape[0] == 0:
            raise ValueError(f"{name}: expected embeddings shaped (sentences, tokens, width), got {tuple(e.shape)}")
    if source.shape[1:] != target.shape[1:]:
        raise ValueError(f"source and target come from different text encoders: source embeddings are "
                         f"{tuple(source.shape[1:])} (tokens, width) per sentence, target {tuple(target.shape[1:])}. "
                         "Encode both with the same CLIP.")
    return (target.float().mean(0) - source.float().mean(0))[None]


def add_direction(cond, direction):
    """The conditional embedding of every image moved by the direction (any batch)."""
    if direction.shape[-1] != cond.shape[-1] or direction.shape[-2] != cond.shape[-2]:
        raise ValueError(f"the edit direction is {tuple(direction.shape[-2:])} (tokens, width) but the prompt is "
                         f"{tuple(cond.shape[-2:])}: the direction was made with another text encoder (or a prompt "
                         "longer than 75 tokens); make it with the CLIP of this model and keep the prompt short.")
    return cond + direction.to(cond)


# ------------------------------------------------------------------ inversion

@dataclass(frozen=True)
class InversionSettings:
    lambda_auto_corr: float = 20.0
    lambda_kl: float = 20.0
    reg_steps: int = 5
    auto_corr_rolls: int = 5


def auto_corr_loss(noise, generator):
    """Squared auto-correlation at a random shift along H and along W, over a pyramid of
    2x average pools down to 8 pixels, per channel plane of one image (1, C, H, W). The
    rolls are drawn channel by channel, coarsest level last, as in the reference."""
    loss = noise.new_zeros(())
    for j in range(noise.shape[1]):
        plane = noise[:, j:j + 1]
        while True:
            shift = int(torch.randint(plane.shape[2] // 2, (1,), generator=generator))
            loss = loss + (plane * torch.roll(plane, shifts=shift, dims=2)).mean() ** 2
            loss = loss + (plane * torch.roll(plane, shifts=shift, dims=3)).mean() ** 2
            if plane.shape[2] <= 8:
                break
            plane = F.avg_pool2d(plane, kernel_size=2)
    return loss


def kl_divergence(noise):
    """KL of N(mean, var) of all values of one image from N(0, 1), up to constants."""
    mean, var = noise.mean(), noise.var()
    return var + mean ** 2 - 1 - torch.log(var + 1e-7)


def _descend(eps, loss_fn, rate):
    with torch.inference_mode(False), torch.enable_grad():
        e = eps.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(e), [e])
    return eps - rate * grad


def regularize(eps, settings, generator):
    """One image's noise prediction (1, C, H, W) pulled towards white noise."""
    eps = eps.float()
    for _ in range(settings.reg_steps):
        if settings.lambda_auto_corr > 0:
            for _ in range(settings.auto_corr_rolls):
                eps = _descend(eps, lambda e: auto_corr_loss(e, generator),
                               settings.lambda_auto_corr / settings.auto_corr_rolls)
        if settings.lambda_kl > 0:
            eps = _descend(eps, kl_divergence, settings.lambda_kl)
    return eps.detach()


def roll_generators(seed, batch):
    """Image i's rolls come from a CPU generator seeded seed + i."""
    return [torch.Generator().manual_seed(int(seed) + i) for i in range(batch)]


def default_c_in(sigma):
    return 1.0 / math.sqrt(sigma ** 2 + 1.0)


def inversion_step(x, sigma, sigma_up, denoise, settings, generators, c_in=default_c_in):
    """x at noise level sigma -> x at sigma_up (> sigma).

    Like the reference, the model is asked at sigma_up's timestep while seeing the input
    of level sigma: denoise(x', sigma_up) is called with x' = x * c_in(sigma) / c_in(sigma_up),
    so the network input c_in(sigma_up) * x' is c_in(sigma) * x."""
    x_eval = x * (c_in(sigma) / c_in(sigma_up))
    eps = (x_eval - denoise(x_eval, sigma_up)) / sigma_up
    eps = torch.cat([regularize(eps[i:i + 1], settings, g) for i, g in enumerate(generators)])
    return (x + (sigma_up - sigma) * eps).to(x.dtype)


def invert(x, sigmas, denoise, settings, generators, c_in=default_c_in, callback=None):
    """DDIM inversion along a sampler's descending sigmas, from the last (the clean latent,
    often 0) up to the first. Returns x at sigmas[0], the start of the same sampler run."""
    levels = [float(s) for s in sigmas][::-1]
    for i in range(len(levels) - 1):
        x = inversion_step(x, levels[i], levels[i + 1], denoise, settings, generators, c_in)
        if callback is not None:
            callback(i, len(levels) - 1)
    return x


# ------------------------------------------------------------------ edit

def map_loss(probs, reference, halves):
    """One layer's cross-attention guidance loss: probs and reference (batch, heads, queries,
    keys). Summed over the images and divided by halves * heads, so every image gets the
    reference's batch-1 gradient whatever the batch (the reference averages over the whole
    batch). halves: 2 when both CFG halves are guided, else 1."""
    diff = probs.float() - reference.to(probs.device, torch.float32)
    return diff.pow(2).sum() / (halves * probs.shape[1])


def guided_latents(x, loss_fn, amount, c_in):
    """The reference's SGD step on the model input of both CFG halves.

    loss_fn(x_uncond, x_cond) -> loss (a grad-enabled forward; x_cond may be None without
    CFG). Returns (x_uncond', x_cond'), or x unchanged for both when amount is 0."""
    if amount == 0:
        return x, x
    with torch.inference_mode(False), torch.enable_grad():
        xu = x.detach().clone().requires_grad_(True)
        xc = x.detach().clone().requires_grad_(True)
        loss = loss_fn(xu, xc)
        gu, gc = torch.autograd.grad(loss, [xu, xc], allow_unused=True)
    gu = torch.zeros_like(x) if gu is None else gu
    gc = torch.zeros_like(x) if gc is None else gc
    return (input_space_descent(x, gu.to(x.dtype), amount, c_in).detach(),
            input_space_descent(x, gc.to(x.dtype), amount, c_in).detach())


def cond_at(x_uncond, x_cond, denoised_cond):
    """The conditional prediction evaluated at x_cond, moved to x_uncond with the same noise
    prediction, so CFG can be taken at x_uncond: eps_c stays (x_cond - D_c) / sigma."""
    return denoised_cond + (x_uncond - x_cond)


def edit_denoised(x, x_uncond, denoised, sigma, sigma_next):
    """What a first-order step from the sampler's x must see so that it lands where the
    reference's step from x_uncond lands."""
    return moved_latent_denoised(x, x_uncond, denoised, sigma, sigma_next)
