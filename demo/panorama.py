"""MultiDiffusion on the demo model: the demo sampler's denoise run over overlapping windows of a
wide canvas and blended (guidance.panorama), the way nodes/panorama.py does it in ComfyUI; and
the two measures of its claims: seams at window borders, and the join of the canvas's edges."""
from ._pack import core
from .host import Host

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


def edge_ratio(images):
    """Per image: the step from the last column to the first (the join of a 360° canvas) over the
    mean step between neighbouring columns (both as in _column_steps)."""
    edge = (images[..., -1] - images[..., 0]).abs().mean(1).median(1).values
    return edge / _column_steps(images).mean(1)
