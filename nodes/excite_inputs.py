"""Attend-and-Excite's step inputs: a step index ("10") or a percent of the steps the
sampler runs ("20%"), resolved when the sampler's step count is known."""
import math
import re


def parse_step(text, input_name):
    text = str(text).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(%?)", text)
    if not match or (not match.group(2) and "." in match.group(1)):
        raise ValueError(f"{input_name}: cannot read '{text}'. Write a step number (25) or a percent of the "
                         "sampler's steps (50%).")
    value = float(match.group(1))
    if match.group(2) and value > 100:
        raise ValueError(f"{input_name}: '{text}' is above 100%.")
    return value, bool(match.group(2))


def parse_thresholds(text):
    """'0: 0.05, 10: 0.5, 20: 0.8' (or '0%: 0.05, 20%: 0.5') -> ((step spec, threshold), ...)."""
    out = []
    for item in (i.strip() for i in re.split(r"[,\n]", text or "") if i.strip()):
        key, sep, value = item.partition(":")
        try:
            threshold = float(value)
        except ValueError:
            threshold = None
        if not sep or threshold is None or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"thresholds: cannot read '{item}'. Write step: threshold pairs with thresholds in "
                             "0..1, e.g. '0: 0.05, 10: 0.5, 20: 0.8' (steps may be percents: '20%: 0.5'), "
                             "or leave it empty for no iterative refinement.")
        out.append((parse_step(key, "thresholds"), threshold))
    return tuple(out)


def resolve(spec, steps):
    value, percent = spec
    return int(math.floor(value * steps / 100 + 1e-9)) if percent else int(value)
