"""The demo's Pix2Pix-Zero composition: its source pass is the plain sampler, its edit without
guidance is the plain sampler on the moved prompt, and the guidance step pulls the edit's
cross-attention towards the source's."""
import torch

from attnguide.demo import pix2pix_zero, scenes
from attnguide.demo.host import Host
from attnguide.demo.model import load
from attnguide.guidance import pix2pix_zero as p2pz


def _inputs(model, n=2):
    captions = ["a red circle and a blue square", "a red triangle"][:n]
    with torch.no_grad():
        cond, uncond = model.text.encode(captions), model.text.encode([""] * n)
    noise = torch.randn(n, 3, scenes.SIZE, scenes.SIZE, generator=torch.Generator().manual_seed(0))
    return noise, cond, uncond, pix2pix_zero.direction(model, "red", "green")


def test_source_and_unguided_edit_are_the_plain_sampler():
    model, _ = load()
    noise, cond, uncond, direction = _inputs(model)
    source, edit = pix2pix_zero.edit(model, noise, cond, uncond, direction, cfg=5.0, steps=4, amount=0.0)
    plain = lambda c: Host(model).sample(noise, c, uncond, 5.0, 4).clamp(-1, 1)  # cond and uncond in one batch
    torch.testing.assert_close(source, plain(cond), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(edit, plain(p2pz.add_direction(cond, direction)), atol=1e-4, rtol=1e-4)
    assert (edit - source).abs().mean() > 1e-2  # the direction changes the picture


def test_guidance_step_pulls_the_edit_maps_towards_the_source_maps():
    """One step of the composition's guidance (as pix2pix_zero.edit runs it) lowers the loss
    between the edit pass's cross-attention and the reference pass's."""
    model, _ = load()
    noise, cond, uncond, direction = _inputs(model)
    sigma = 3.0
    x = noise * sigma
    edit_cond = p2pz.add_direction(cond, direction)
    attention = pix2pix_zero._Attention()
    options = {pix2pix_zero.CROSS_ATTENTION_KEY: attention}

    def loss(xu, xc):
        attention.store = pix2pix_zero._maps.ReferenceMaps()  # the reference pass's maps at this step
        with torch.no_grad():
            for key, context in (("uncond", uncond), ("cond", cond)):
                attention.mode, attention.key = "record", key
                model.denoise(x, sigma, context, options)
        attention.loss = None
        for key, latent, context in (("uncond", xu, uncond), ("cond", xc, edit_cond)):
            attention.mode, attention.key = "loss", key
            model.denoise(latent, sigma, context, options)
        return attention.loss

    before = loss(x, x).item()
    x_u, x_c = p2pz.guided_latents(x, loss, 0.1, p2pz.default_c_in(sigma))
    with torch.no_grad():
        after = loss(x_u, x_c).item()
    assert before > 0 and after < before, (before, after)


def test_direction_needs_demo_words():
    import pytest
    with pytest.raises(ValueError, match="not a colour or shape"):
        pix2pix_zero.concept_sentences("cat")
