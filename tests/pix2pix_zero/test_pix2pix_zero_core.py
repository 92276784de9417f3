"""guidance.pix2pix_zero without a host: sentence lists, direction checks, the per-image loss
and regularisation, the latent update."""
import pytest
import torch

from attnguide.attention.cross_maps import ReferenceMaps
from attnguide.guidance import pix2pix_zero as p2pz


def test_a_word_is_expanded_with_the_templates_and_sentences_are_kept():
    assert p2pz.sentences("cat", "source") == [t.format("cat") for t in p2pz.TEMPLATES]
    assert p2pz.sentences(" red car \n", "source")[0] == "a photo of a red car."
    assert p2pz.sentences("a cat on a sofa.\n\n a cat in the grass \n", "source") == ["a cat on a sofa.", "a cat in the grass"]
    assert p2pz.sentences("a cat on a sofa.", "source") == ["a cat on a sofa."]
    with pytest.raises(ValueError, match="target is empty"):
        p2pz.sentences(" \n\t", "target")


def test_direction_is_mean_target_minus_mean_source():
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.randn(3, 77, 8, generator=g), torch.randn(5, 77, 8, generator=g)
    d = p2pz.edit_direction(src, tgt)
    assert d.shape == (1, 77, 8)
    assert torch.allclose(d[0], tgt.mean(0) - src.mean(0))
    with pytest.raises(ValueError, match="different text encoders"):
        p2pz.edit_direction(src, torch.randn(2, 77, 16))
    with pytest.raises(ValueError, match="another text encoder"):
        p2pz.add_direction(torch.zeros(2, 77, 16), d)
    assert torch.equal(p2pz.add_direction(torch.zeros(2, 77, 8), d), d.expand(2, -1, -1))


def test_map_loss_gives_each_image_its_batch1_gradient():
    g = torch.Generator().manual_seed(1)
    probs = torch.rand(2, 4, 6, 5, generator=g).requires_grad_(True)
    ref = torch.rand(2, 4, 6, 5, generator=g)
    (both,) = torch.autograd.grad(p2pz.map_loss(probs, ref, 2), [probs])
    one = probs[1:].detach().requires_grad_(True)
    (alone,) = torch.autograd.grad(p2pz.map_loss(one, ref[1:], 2), [one])
    assert torch.allclose(both[1:], alone)


def test_regularisation_is_per_image_and_seeded():
    g = torch.Generator().manual_seed(2)
    eps = torch.randn(2, 4, 16, 16, generator=g) * 1.5 + 0.3
    s = p2pz.InversionSettings()
    gens = p2pz.roll_generators(5, 2)
    both = torch.cat([p2pz.regularize(eps[i:i + 1], s, gens[i]) for i in range(2)])
    alone = p2pz.regularize(eps[1:], s, p2pz.roll_generators(6, 1)[0])
    assert torch.equal(both[1:], alone)
    assert p2pz.kl_divergence(both[0]) < p2pz.kl_divergence(eps[0])
    assert not torch.equal(both, eps)


def test_guided_latents_amount_0_is_a_no_op_and_else_descends():
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    calls = []
    loss = lambda xu, xc: (calls.append(1), (xu ** 2).sum() + ((xc - 1) ** 2).sum())[1]
    assert p2pz.guided_latents(x, loss, 0.0, 0.5) == (x, x) and not calls
    xu, xc = p2pz.guided_latents(x, loss, 0.1, 0.5)
    assert torch.allclose(xu, x - 0.1 / 0.25 * 2 * x) and torch.allclose(xc, x - 0.1 / 0.25 * 2 * (x - 1))
    assert torch.allclose(p2pz.cond_at(xu, xc, xc), xu, atol=1e-6)   # eps_c = (x_c - D_c) / sigma = 0 stays 0 at x_u


def test_reference_maps_are_read_back_in_order():
    maps = ReferenceMaps(torch.float16)
    a, b = torch.rand(1, 2, 3, 4), torch.rand(1, 2, 3, 4)
    maps.record("cond", a)
    maps.record("cond", b)
    assert maps.nbytes() == 2 * a.numel() * 2
    assert torch.equal(maps.next("cond"), a.half()) and torch.equal(maps.next("cond"), b.half())
    with pytest.raises(RuntimeError, match="more cross-attention layers"):
        maps.next("cond")
