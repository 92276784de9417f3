"""Semantic Guidance (Brack et al. 2023): add or remove concepts with extra noise predictions.

The noise-space rule of diffusers' SemanticStableDiffusionPipeline, in eps units (the
scales and the momentum are additive magnitudes, so they cannot be moved to denoised units).
Per step, for every concept c with noise prediction eps_c:

  gamma_c = +-scale_c * (eps_c - eps_uncond), zeroed where |gamma_c| is below its
            `threshold` quantile over H*W, per batch item and channel
  some concepts warm  -> edit = sum over warm c of w_c / sum(warm w) * gamma_c (no momentum)
  always              -> G = sum_c w_c * gamma_c + momentum_scale * m;  m <- beta*m + (1-beta)*G
  all concepts warm   -> edit = G

and the sampler uses eps_uncond + cfg * (eps_text - eps_uncond) + edit. A concept in its
cooldown has gamma_c = 0 and w_c = 0. Where the warm concepts' weights sum to 0 (all of them
cooled down) the normalised sum is 0; the reference divides 0 by 0 there and returns NaN.
"""
from dataclasses import dataclass

import torch

from .schedule import step_at
from .sigma_space import from_eps, to_eps


@dataclass(frozen=True)
class Concept:
    scale: float = 5.0
    reverse: bool = False
    warmup: int = 10           # first step the concept counts as warm
    cooldown: int = None       # first step the concept is off; None = never
    threshold: float = 0.9
    weight: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"SEGA concept threshold is {self.threshold}; it must be in [0, 1) "
                             "(0.9 keeps the 10% largest values of each channel)")
        if self.weight < 0:
            raise ValueError(f"SEGA concept weight is {self.weight}; it must be >= 0")
        if self.warmup < 0 or (self.cooldown is not None and self.cooldown < 0):
            raise ValueError(f"SEGA concept warmup ({self.warmup}) and cooldown ({self.cooldown}) must be >= 0")


def concept_direction(eps_concept, eps_uncond, concept):
    """gamma_c: the scaled concept direction, keeping only the entries at or above the
    `threshold` quantile of |gamma_c| within each batch item and channel."""
    gamma = (eps_concept - eps_uncond) * (-concept.scale if concept.reverse else concept.scale)
    magnitude = gamma.abs()
    q = torch.quantile(magnitude.flatten(2).float(), concept.threshold, dim=2).to(gamma.dtype)
    q = q.reshape(*q.shape, *([1] * (gamma.ndim - 2)))
    return torch.where(magnitude >= q, gamma, torch.zeros_like(gamma))


def sega_guidance(eps_uncond, eps_concepts, concepts, step, momentum=None, momentum_scale=0.1, momentum_beta=0.4):
    """(edit, momentum): what SEGA adds to the noise guidance at `step`, and the momentum
    to pass to the next step (None on the first step of a generation)."""
    if momentum is None:
        momentum = torch.zeros_like(eps_uncond)
    gammas, weights, warm = [], [], []
    for i, (eps_c, c) in enumerate(zip(eps_concepts, concepts)):
        if step >= c.warmup:
            warm.append(i)
        if c.cooldown is not None and step >= c.cooldown:
            gammas.append(torch.zeros_like(eps_uncond))
            weights.append(0.0)
        else:
            gammas.append(concept_direction(eps_c, eps_uncond, c))
            weights.append(c.weight)

    edit = torch.zeros_like(eps_uncond)
    if 0 < len(warm) < len(concepts):
        total = sum(weights[i] for i in warm)
        if total > 0:
            edit = sum(weights[i] / total * gammas[i] for i in warm)

    combined = sum(w * g for w, g in zip(weights, gammas)) + momentum_scale * momentum
    momentum = momentum_beta * momentum + (1 - momentum_beta) * combined
    if len(warm) == len(concepts):
        edit = combined
    return edit, momentum



def sega_denoised(x, sigma, denoised, uncond_denoised, concept_denoised, concepts, step, momentum=None,
                  momentum_scale=0.1, momentum_beta=0.4):
    """The sampler's denoised prediction `denoised` (CFG and whatever else) with SEGA's edit
    added in eps units, and the momentum for the next step. All predictions are at (x, sigma)."""
    eps_uncond = to_eps(x, sigma, uncond_denoised)
    eps_concepts = [to_eps(x, sigma, d) for d in concept_denoised]
    edit, momentum = sega_guidance(eps_uncond, eps_concepts, concepts, step, momentum, momentum_scale, momentum_beta)
    return from_eps(denoised, sigma, edit), momentum  # denoised - sigma * edit


def timed_concept(steps, scale=5.0, reverse=False, warmup=10, cooldown=None, unit="steps", threshold=0.9, weight=1.0):
    """A Concept for a run of `steps` whose warmup and cooldown are given in `unit`: sampler steps
    or percent of the steps (schedule.step_at). cooldown None = never."""
    return Concept(scale=scale, reverse=reverse, warmup=step_at(warmup, unit, steps),
                   cooldown=step_at(cooldown, unit, steps), threshold=threshold, weight=weight)
