"""Window layout, cropping and blending of the MultiDiffusion core (guidance.panorama)."""
import pytest
import torch

from attnguide.guidance import panorama as pano


def starts(windows):
    return sorted({w.top for w in windows}), sorted({w.left for w in windows})


def test_diffusers_layouts():
    # 128x1024 px and 512x2048 px, the numbers of diffusers' get_views (window 64, stride 8)
    assert len(pano.layout(16, 128)) == 9
    assert len(pano.layout(16, 128, wrap=(False, True))) == 16
    assert len(pano.layout(64, 256)) == 25
    assert len(pano.layout(64, 256, wrap=(False, True))) == 32
    tops, lefts = starts(pano.layout(64, 256))
    assert tops == [0] and lefts == list(range(0, 193, 8))
    win = pano.layout(16, 128)[0]
    assert (win.height, win.width) == (16, 64)  # an axis shorter than the window takes it whole


SIZES = [(16, 128), (64, 256), (17, 131), (72, 80), (9, 203), (100, 63), (1, 1), (64, 64)]


@pytest.mark.parametrize("wrap", [(False, False), (False, True), (True, False), (True, True)], ids=str)
@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("window,stride", [((64, 64), (8, 8)), ((16, 24), (8, 5)), ((7, 9), (3, 9))], ids=str)
def test_every_position_is_covered(size, window, stride, wrap):
    windows = pano.layout(*size, window, stride, wrap)
    counts = pano.coverage(windows, *size)
    assert counts.min() >= 1
    for w in windows:
        assert w.height == min(window[0], size[0]) and w.width == min(window[1], size[1])
        for start, extent, length, wraps in ((w.top, w.height, size[0], wrap[0]), (w.left, w.width, size[1], wrap[1])):
            assert 0 <= start < length
            if not wraps:
                assert start + extent <= length  # plain windows never leave the latent


@pytest.mark.parametrize("length,window,stride", [(131, 64, 8), (203, 64, 8), (100, 16, 7), (63, 64, 8)])
def test_plain_axis_spacing_and_border(length, window, stride):
    size, s = pano.axis_windows(length, window, stride, wrap=False)
    assert s[0] == 0 and s[-1] + size == length  # the last window ends at the border
    assert all(0 < b - a <= stride for a, b in zip(s, s[1:]))


def test_wrap_around_counts_are_uniform():
    # stride divides the axis: every column is in window/stride windows, the seam included
    counts = pano.coverage(pano.layout(16, 128, wrap=(False, True)), 16, 128)
    assert torch.equal(counts, torch.full((16, 128), 8.0))
    counts = pano.coverage(pano.layout(72, 80, (64, 64), (8, 8), (True, True)), 72, 80)
    assert torch.equal(counts, torch.full((72, 80), 64.0))
    # plain: the borders are covered once, the middle window/stride times
    counts = pano.coverage(pano.layout(16, 128), 16, 128)[0]
    assert counts[0] == 1 and counts[-1] == 1 and counts[64] == 8


def test_wrap_on_an_axis_no_longer_than_the_window_rolls_the_whole_axis():
    size, s = pano.axis_windows(64, 64, 8, wrap=True)
    assert size == 64 and s == list(range(0, 64, 8))
    size, s = pano.axis_windows(20, 64, 8, wrap=True)
    assert size == 20 and s == [0, 6, 13]
    assert pano.axis_windows(20, 64, 8, wrap=False) == (20, [0])


def test_stride_larger_than_window_is_an_error():
    with pytest.raises(ValueError, match="window width.*stride"):
        pano.layout(16, 128, (64, 16), (8, 17))


def test_crop_wraps_like_roll():
    x = torch.randn(2, 3, 9, 13)
    win = pano.Window(top=6, left=10, height=5, width=7)
    expected = torch.roll(x, (-6, -10), (-2, -1))[..., :5, :7]
    assert torch.equal(pano.crop(x, [win]), expected)
    # stacked window-major, the batch inside
    wins = [pano.Window(0, 0, 5, 7), win]
    assert torch.equal(pano.crop(x, wins), torch.cat([x[..., :5, :7], expected]))


@pytest.mark.parametrize("mode", [pano.UNIFORM, pano.FEATHERED])
@pytest.mark.parametrize("wrap", [(False, False), (True, True)], ids=str)
def test_blend_of_crops_gives_back_the_latent(mode, wrap):
    x = torch.randn(2, 4, 17, 31)
    windows = pano.layout(17, 31, (8, 12), (3, 5), wrap)
    weight = pano.window_weight(windows[0].height, windows[0].width, mode)
    blend = pano.Blend(x)
    for i in range(0, len(windows), 4):
        group = windows[i:i + 4]
        blend.add(pano.crop(x, group), group, weight)
    assert torch.allclose(blend.result(), x, atol=1e-6)


def test_blend_weights_each_window():
    x = torch.zeros(1, 1, 1, 6)
    windows = [pano.Window(0, 0, 1, 4), pano.Window(0, 2, 1, 4)]
    blend = pano.Blend(x)
    blend.add(torch.full((1, 1, 1, 4), 1.0), windows[:1], torch.tensor([[1.0, 1.0, 1.0, 1.0]]))
    blend.add(torch.full((1, 1, 1, 4), 4.0), windows[1:], torch.tensor([[1.0, 3.0, 3.0, 3.0]]))
    assert torch.allclose(blend.result().flatten(), torch.tensor([1, 1, 2.5, 13 / 4, 4, 4]))


def test_feathered_weights():
    w = pano.window_weight(64, 64, pano.FEATHERED)
    assert w.min() > 0 and w.max() == 1 and w[32, 32] == 1
    assert torch.equal(w, w.flip(0)) and torch.equal(w, w.flip(1)) and torch.equal(w, w.T)
    assert w[0, 32] < w[8, 32] < w[16, 32] == 1
    assert torch.equal(pano.window_weight(5, 7), torch.ones(5, 7))
    with pytest.raises(ValueError, match="weights"):
        pano.window_weight(4, 4, "gaussian")


def test_tile_batch():
    t = torch.arange(2)[:, None]
    assert pano.tile_batch(t, 6).flatten().tolist() == [0, 1, 0, 1, 0, 1]
    assert pano.tile_batch(t, 1).flatten().tolist() == [0]


def test_mask_aspect():
    assert pano.aspect_matches((512, 2048), (64, 256))
    assert pano.aspect_matches((100, 401), (64, 256))
    assert not pano.aspect_matches((512, 512), (64, 256))
    assert not pano.aspect_matches((2048, 512), (64, 256))


def test_bootstrap_input():
    x, bg = torch.full((1, 1, 1, 3), 2.0), torch.full((1, 1, 1, 3), -1.0)
    mask = torch.tensor([1.0, 0.5, 0.0]).view(1, 1, 1, 3)
    assert pano.bootstrap_input(x, mask, bg).flatten().tolist() == [2.0, 0.5, -1.0]


def test_colour_latent_previews_as_the_colour():
    g = torch.Generator().manual_seed(0)
    factors, bias = torch.randn(4, 3, generator=g), torch.randn(3, generator=g)
    rgb = torch.rand(5, 3, generator=g) * 2 - 1
    latent = pano.colour_latent(rgb, factors, bias)
    assert latent.shape == (5, 4)
    assert torch.allclose(latent @ factors + bias, rgb, atol=1e-5)
