"""The demo's MultiDiffusion host and its two measures."""
import torch

from attnguide.demo import panorama, scenes
from attnguide.demo.host import Host
from attnguide.demo.model import load


def test_one_window_canvas_is_the_plain_sampler():
    model, _ = load()
    with torch.no_grad():
        cond, uncond = model.text.encode(["a red circle"]), model.text.encode([""])
    noise = torch.randn(1, 3, scenes.SIZE, scenes.SIZE, generator=torch.Generator().manual_seed(0))
    plain = Host(model).sample(noise, cond, uncond, 5.0, 4)
    windowed = panorama.PanoramaHost(model, scenes.SIZE, 8).sample(noise, cond, uncond, 5.0, 4)
    torch.testing.assert_close(windowed, plain)


def test_every_window_is_one_chunk_of_one_call():
    model, _ = load()
    with torch.no_grad():
        cond, uncond = model.text.encode(["a red circle"] * 2), model.text.encode([""] * 2)
    host = panorama.PanoramaHost(model, scenes.SIZE, 8)
    host.sample(torch.randn(2, 3, scenes.SIZE, 2 * scenes.SIZE), cond, uncond, 5.0, 2)
    assert host.model_calls == [2 * 5 * 2] * 2  # batch 2 x 5 windows x (cond, uncond), one call per step


def test_seam_ratio_sees_a_step_shared_by_a_whole_column():
    flat = torch.zeros(1, 3, 8, 16)
    flat[..., 1::2] += 0.01                 # small texture everywhere
    seam = flat.clone()
    seam[..., 8:] += 0.5                    # two backgrounds meeting at column 8
    edge = torch.zeros_like(flat)
    edge[..., 3, 8] = 5.0                   # one shape edge crossing the border row: not a seam
    assert panorama.seam_ratio(seam, [8]) > 10 * panorama.seam_ratio(flat, [8])
    assert panorama.seam_ratio(edge + flat, [8]) < 2


def test_join_occupancy_sees_an_empty_band_where_the_edges_meet():
    background = torch.tensor(scenes.BACKGROUND).view(1, 3, 1, 1) * 2 - 1
    red = torch.tensor(scenes.COLOURS["red"]).view(1, 3, 1, 1) * 2 - 1
    canvas = background.expand(1, 3, 8, 24).clone()
    canvas[..., 2:6, 3:21] = red                    # shapes everywhere but near the edges
    loop = torch.roll(canvas, 8, dims=-1)           # the same content, the empty band moved inside
    loop[..., 2:6, :] = red
    assert panorama.join_occupancy(canvas).item() < -0.1
    assert abs(panorama.join_occupancy(loop).item()) < 0.05
