"""Step counts given in steps or in percent of the steps a sampler runs (SEGA's warmup and
cooldown, Attend-and-Excite's limits)."""
import math


def step_at(value, unit, steps):
    """A step count given in steps, or in percent of the `steps` the sampler runs, as the
    first step index it reaches (warmups, cooldowns, refinement limits). None stays None."""
    if value is None:
        return None
    if unit == "steps":
        return int(value)
    if unit == "percent":
        return math.ceil(value / 100.0 * steps - 1e-9)
    raise ValueError(f"unknown step unit {unit!r}: use 'steps' or 'percent'")
