"""MultiDiffusion on the demo model: the demo sampler's denoise run over overlapping windows of a
wide canvas and blended (guidance.panorama), the way comfyui/panorama.py does it in ComfyUI; and
the two measures of its claims: seams at window borders, and content across the join of a
360-degree canvas's edges."""
import torch

from ._pack import core
from .host import Host
from .judge import nearest_palette

_pano = core("guidance.panorama")


class PanoramaHost(Host):
    """Host whose every denoise is MultiDiffusion over `window`-sized crops `stride` apart."""

    def __init__(self, model, window=32, stride=8, wrap=(False, False), guidances=()):
        super().__init__(model, guidances)
        self.window, self.stride, self.wrap = window, stride, wrap

    def _denoise(self, x, sigma, cond, uncond, cfg, ctx):
        windows = _pano.layout(*x.shape[-2:], (self.window, self.window), (self.stride, self.stride), self.wrap)
        rows = x.shape[0] * len(windows)
        tile = lambda c: None if c is None else _pano.tile_batch(c, rows)
        denoised = super()._denoise(_pano.crop(x, windows), sigma, tile(cond), tile(uncond), cfg, ctx)
        blend = _pano.Blend(x)
        blend.add(denoised, windows, _pano.window_weight(windows[0].height, windows[0].width))
        return blend.result()


def _column_steps(images):
    """|difference| between neighbouring columns, channel-averaged, median over rows, per image:
    (n, W - 1). The median leaves out the few rows where a shape's edge crosses; what stays is a
    step the whole column shares, as a seam between separately generated backgrounds is."""
    return (images[..., 1:] - images[..., :-1]).abs().mean(1).median(1).values


def seam_ratio(images, borders):
    """Per image: the column step across the given borders (a border c lies between columns c - 1
    and c) over the mean step elsewhere. About 1 without seams."""
    steps = _column_steps(images)
    at = [c - 1 for c in borders]
    rest = [j for j in range(steps.shape[1]) if j not in at]
    return steps[:, at].mean(1) / steps[:, rest].mean(1)


def join_occupancy(images, columns=2):
    """Per image: the share of shape (non-background) pixels in the `columns` columns on each side
    of the join of the canvas's right and left edges, minus the share over the whole canvas.
    About 0 when the join is one more interior place of a 360-degree loop (content continues across
    it); negative when the canvas keeps its edges empty, an empty band where the loop closes."""
    shape = (nearest_palette(images.clamp(-1, 1)) > 0).float().mean(1)  # (n, W): per column
    join = torch.cat([shape[:, -columns:], shape[:, :columns]], dim=1)
    return join.mean(1) - shape.mean(1)
