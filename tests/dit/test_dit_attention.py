"""DiT layer addresses and the joint-attention kernels PAG and SAG use on DiTs, against plain
masked softmax attention written out here (the mask StableDiffusion3PAGPipeline builds)."""
import pytest
import torch

from attnguide.attention.dit_blocks import FLUX, SD3, dit_blocks, dit_family, text_tokens
from attnguide.attention.layers import Layer, LayerSelectionError, describe, forward_order, parse_layers
from attnguide.attention.math import (attention_with_key_mass, image_identity_with_text, merge_heads,
                                      self_attention_key_mass, split_heads)

FLUX_LAYERS = [Layer("joint", i, 0) for i in range(19)] + [Layer("single", i, 0) for i in range(38)]


def test_dit_layers_read_and_print():
    assert describe(FLUX_LAYERS) == "j0-18, s0-37"
    assert describe([Layer("joint", i, 0) for i in (0, 1, 2, 5, 7, 8)]) == "j0-2, j5, j7-8"
    assert str(Layer("single", 3, 0)) == "s3"
    assert parse_layers("j1", FLUX_LAYERS) == (Layer("joint", 1, 0),)
    assert parse_layers("s0-2, J18", FLUX_LAYERS) == tuple(Layer("single", i, 0) for i in range(3)) + (Layer("joint", 18, 0),)
    assert len(parse_layers("s", FLUX_LAYERS)) == 38
    assert parse_layers("auto", FLUX_LAYERS, auto="s0") == (Layer("single", 0, 0),)
    assert sorted(FLUX_LAYERS, key=forward_order)[18:20] == [Layer("joint", 18, 0), Layer("single", 0, 0)]


@pytest.mark.parametrize("text, match", [("j19", r"'j19' names no attention layer.*j0-18, s0-37"),
                                         ("m0", r"'m0' names no attention layer.*j0-18, s0-37"),
                                         ("x1", r"cannot read 'x1'.*j/s \+ block"),
                                         ("auto", r"'auto' has no default here.*j0-18, s0-37")])
def test_dit_selection_errors_list_the_blocks(text, match):
    with pytest.raises(LayerSelectionError, match=match):
        parse_layers(text, FLUX_LAYERS)


def test_families_found_by_class_name_and_blocks():
    Flux = type("Flux", (torch.nn.Module,), {})
    model = Flux()
    model.double_blocks = torch.nn.ModuleList([torch.nn.Identity() for _ in range(2)])
    model.single_blocks = torch.nn.ModuleList([torch.nn.Identity() for _ in range(3)])
    assert dit_family(model) is FLUX
    assert [str(layer) for layer, _ in dit_blocks(model, FLUX)] == ["j0", "j1", "s0", "s1", "s2"]
    assert dit_family(type("WanModel", (torch.nn.Module,), {})()) is None
    assert dit_family(type("Flux", (torch.nn.Module,), {})()) is None  # without its blocks
    txt = torch.zeros(2, 7, 4)
    assert text_tokens(FLUX, (), {"img": torch.zeros(2, 9, 4), "txt": txt}) == 7
    assert text_tokens(SD3, (txt, torch.zeros(2, 9, 4)), {}) == 7


def _masked_reference(q, k, v, heads, t):
    """diffusers' PAGJointAttnProcessor2_0: -inf among image tokens except the diagonal."""
    n = q.shape[1]
    mask = torch.zeros(n, n)
    mask[t:, t:] = float("-inf")
    mask[t:, t:].fill_diagonal_(0)
    qh, kh, vh = split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)
    probs = torch.softmax(qh @ kh.transpose(-1, -2) * qh.shape[-1] ** -0.5 + mask, dim=-1)
    return merge_heads(probs @ vh)


def _plain(q, k, v, heads):
    return attention_with_key_mass(q, k, v, heads)[0]


def test_image_identity_with_text_is_the_reference_mask():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5 + 12, 3 * 8, generator=g) for _ in range(3))
    ours = image_identity_with_text(q, k, v, 3, 5, lambda q, k, v: _plain(q, k, v, 3))
    ref = _masked_reference(q, k, v, 3, 5)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert not torch.allclose(ours[:, 5:], v[:, 5:], atol=1e-2)  # the text still moves the image tokens
    assert torch.allclose(ours[:, :5], _plain(q, k, v, 3)[:, :5], atol=1e-6)


def test_key_mass_without_output_is_the_same_mass():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 30, 16, generator=g) for _ in range(3))
    mass = self_attention_key_mass(q, k, 2)
    assert torch.allclose(mass, attention_with_key_mass(q, k, v, 2)[1], atol=1e-6)
    assert torch.allclose(mass.mean(dim=1), torch.ones(2), atol=1e-5)


def test_sag_degrades_a_one_frame_latent_as_the_image():
    from attnguide.guidance.sag import degraded_branch
    g = torch.Generator().manual_seed(2)
    x, pred = torch.randn(2, 16, 8, 12, generator=g), torch.randn(2, 16, 8, 12, generator=g)
    mass = torch.rand(2, 4 * 6, generator=g) * 2
    flat = degraded_branch(x, pred, mass, (4, 6), 1.0, 1.0)
    framed = degraded_branch(x[:, :, None], pred[:, :, None], mass, (4, 6), 1.0, 1.0)
    assert framed[0].shape == (2, 16, 1, 8, 12)
    assert all(torch.equal(a, b[:, :, 0]) for a, b in zip(flat, framed))
    assert not torch.equal(flat[0], pred)
