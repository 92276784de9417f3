"""MultiDiffusion (Bar-Tal et al. 2023) in sigma space: a model that denoises overlapping
windows of a large latent, whose denoised predictions are averaged at every step.

Averaging the windows' denoised predictions D equals diffusers' StableDiffusionPanoramaPipeline,
which averages the windows' DDIM steps: for Euler/DDIM (and any deterministic linear multistep
method) the step is affine in D with window-independent coefficients.

Windows along an axis of length L (window k, stride s):
  * plain: ceil((L - k) / s) + 1 windows spread evenly from 0 to L - k, so the last one
    ends at the border (diffusers' layout when s divides L - k; diffusers leaves the
    rest of the border uncovered otherwise);
  * wrap-around (360 degrees): ceil(L / s) windows spread evenly over the whole axis, each
    continuing past the end at the start. A window never exceeds the axis; on an axis no
    longer than k each window is the whole axis, rolled, which still joins the two edges.
Region prompts (the paper's region-based generation) are masked conditions; for the first
steps each region sees the latent only under its mask and a noised flat background elsewhere
("bootstrapping").
"""
import math
from dataclasses import dataclass

import torch

UNIFORM, FEATHERED = "uniform", "feathered"


@dataclass(frozen=True)
class Window:
    top: int
    left: int
    height: int
    width: int


WRAPS = {"none": (False, False), "horizontal": (False, True), "vertical": (True, False), "both": (True, True)}


def pixel_settings(window_width, window_height, stride, wrap, weights, window_batch, ratio, native):
    """(window, stride, wrap) in latent positions from the inputs in pixels (a window side of
    0 = `native` latent positions; `ratio` pixels per latent position), each input checked."""
    for name, value in (("window_width", window_width), ("window_height", window_height), ("stride", stride)):
        if value % ratio:
            raise ValueError(f"{name}: {value} px is not a multiple of the latent scale ({ratio} px); "
                             f"use e.g. {max(ratio, value // ratio * ratio)}.")
    window = (window_height // ratio or native, window_width // ratio or native)
    if stride // ratio > min(window):
        raise ValueError(f"stride: {stride} px is larger than the window ({min(window) * ratio} px); "
                         "the windows would leave gaps. Use a stride of at most the window size.")
    if wrap not in WRAPS:
        raise ValueError(f"wrap: unknown value {wrap!r}; use one of {', '.join(WRAPS)}")
    if window_batch < 1:
        raise ValueError(f"window_batch: {window_batch}; evaluate at least 1 window per model call")
    window_weight(1, 1, weights)  # validates the mode
    return window, (stride // ratio, stride // ratio), WRAPS[wrap]


def axis_windows(length, window, stride, wrap, name="window"):
    """(size, starts) of the windows along one axis."""
    if length < 1 or window < 1 or stride < 1:
        raise ValueError(f"{name}: length {length}, window {window} and stride {stride} must be positive")
    size = min(window, length)
    if stride > size < length:
        raise ValueError(f"{name}: the stride ({stride}) is larger than the window ({size} on an axis of {length}); "
                         "the windows would leave gaps. Use a stride of at most the window size.")
    if wrap:
        n = math.ceil(length / stride)
        return size, [i * length // n for i in range(n)]
    if length == size:
        return size, [0]
    n = math.ceil((length - size) / stride) + 1
    return size, [i * (length - size) // (n - 1) for i in range(n)]


def layout(height, width, window=(64, 64), stride=(8, 8), wrap=(False, False)):
    """The windows over a (height, width) latent, row by row."""
    h, tops = axis_windows(height, window[0], stride[0], wrap[0], "window height")
    w, lefts = axis_windows(width, window[1], stride[1], wrap[1], "window width")
    return [Window(t, l, h, w) for t in tops for l in lefts]


def _runs(start, size, length):
    """(offset in window, offset in latent, count) pieces of a window along one axis, wrapping."""
    runs, offset = [], 0
    while offset < size:
        pos = (start + offset) % length
        n = min(size - offset, length - pos)
        runs.append((offset, pos, n))
        offset += n
    return runs


def _pieces(win, height, width):
    for oy, py, ny in _runs(win.top, win.height, height):
        for ox, px, nx in _runs(win.left, win.width, width):
            yield (slice(oy, oy + ny), slice(ox, ox + nx)), (slice(py, py + ny), slice(px, px + nx))


def crop(x, windows):
    """The windows of x (..., H, W) stacked along dim 0: window-major, x's batch inside."""
    height, width = x.shape[-2:]
    out = []
    for win in windows:
        if win.top + win.height <= height and win.left + win.width <= width:
            out.append(x[..., win.top:win.top + win.height, win.left:win.left + win.width])
            continue
        part = x.new_empty(x.shape[:-2] + (win.height, win.width))
        for (wy, wx), (ly, lx) in _pieces(win, height, width):
            part[..., wy, wx] = x[..., ly, lx]
        out.append(part)
    return torch.cat(out) if len(out) > 1 else out[0]


def window_weight(height, width, mode=UNIFORM):
    """Per-position weight of a window's prediction: 1 (the reference), or a ramp that falls
    towards the window's borders over a quarter of its size (never to 0)."""
    if mode == UNIFORM:
        return torch.ones(height, width)
    if mode != FEATHERED:
        raise ValueError(f"weights: unknown mode {mode!r}; use '{UNIFORM}' or '{FEATHERED}'")

    def ramp(n):
        r = max(1, n // 4)
        i = torch.arange(n, dtype=torch.float32)
        return torch.minimum(torch.ones(n), torch.minimum(i + 1, n - i) / (r + 1))

    return ramp(height)[:, None] * ramp(width)[None, :]


class Blend:
    """Weighted average of window predictions over the full latent."""

    def __init__(self, like):
        self.value = torch.zeros_like(like)
        self.weight = torch.zeros(like.shape[-2:], dtype=like.dtype, device=like.device)

    def add(self, stacked, windows, weight):
        """stacked: the windows' predictions as crop() lays them out; weight: (h, w)."""
        height, width = self.value.shape[-2:]
        weight = weight.to(stacked.device, stacked.dtype)
        for part, win in zip(stacked.chunk(len(windows)), windows):
            part = part * weight
            for (wy, wx), (ly, lx) in _pieces(win, height, width):
                self.value[..., ly, lx] += part[..., wy, wx]
                self.weight[ly, lx] += weight[wy, wx]

    def result(self):
        return self.value / self.weight


def coverage(windows, height, width):
    """How many windows cover each latent position."""
    blend = Blend(torch.zeros(height, width))
    for win in windows:
        blend.add(torch.ones(win.height, win.width), [win], torch.ones(win.height, win.width))
    return blend.weight


def tile_batch(t, batch):
    """t's rows repeated (or cut) to `batch` rows, as the host repeats conditioning."""
    if t.shape[0] == batch:
        return t
    reps = math.ceil(batch / t.shape[0])
    return t.repeat((reps,) + (1,) * (t.ndim - 1))[:batch]


def aspect_matches(mask_hw, latent_hw):
    """A mask fits the latent when its aspect gives the latent's height within one position."""
    (mh, mw), (h, w) = mask_hw, latent_hw
    return abs(mh / mw * w - h) <= 1.0


def bootstrap_input(x, mask, background):
    """The region's input while bootstrapping: the latent under the mask, background elsewhere."""
    return mask * x + (1 - mask) * background


def colour_latent(rgb, rgb_factors, rgb_bias=None):
    """The smallest latent colour whose preview (latent @ rgb_factors + bias) is `rgb` (b, 3).

    rgb_factors: (channels, 3), the host's linear latent-to-RGB preview map."""
    target = rgb if rgb_bias is None else rgb - rgb_bias
    return target @ torch.linalg.pinv(rgb_factors)
