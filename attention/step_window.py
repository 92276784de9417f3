"""When a method is on: a window over the sampler's steps and/or a sigma range.

Steps are counted in the schedule the sampler actually runs (so img2img counts from
its first real step). A sampler that evaluates between schedule sigmas (Heun, DPM
2S) belongs to the step it is inside.
"""
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    start_percent: float = 0.0
    end_percent: float = 1.0
    sigma_max: float = math.inf
    sigma_min: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.start_percent <= self.end_percent <= 1.0:
            raise ValueError(f"start_percent ({self.start_percent}) and end_percent ({self.end_percent}) "
                             "must satisfy 0 <= start_percent <= end_percent <= 1")
        if self.sigma_min > self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min}) is above sigma_max ({self.sigma_max})")

    def active(self, step, steps, sigma):
        fraction = step / max(steps, 1)
        in_steps = self.start_percent - 1e-9 <= fraction < self.end_percent - 1e-9
        return in_steps and self.sigma_min <= sigma <= self.sigma_max


def step_index(sample_sigmas, sigma):
    """(step, steps) of sigma within a descending schedule that ends at its last sigma."""
    steps = len(sample_sigmas) - 1
    if steps < 1:
        return 0, 1
    sigma = float(sigma)
    reached = sum(1 for s in sample_sigmas[:-1] if float(s) >= sigma * (1 - 1e-5))
    return max(0, reached - 1), steps
