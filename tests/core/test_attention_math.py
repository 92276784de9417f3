"""attention.math: the chunked softmax kernel, the key-mass capture for SAG, identity for PAG."""
import pytest
import torch
import torch.nn.functional as F

import attnguide.attention.math as amath
from attnguide.attention.math import (attention_with_key_mass, identity_attention, merge_heads,
                                      softmax_attention, split_heads)


def qkv(b=2, nq=37, nk=37, heads=4, dim=8, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, nq, heads * dim, generator=g) * scale
    k = torch.randn(b, nk, heads * dim, generator=g) * scale
    v = torch.randn(b, nk, heads * dim, generator=g)
    return q, k, v


def sdpa(q, k, v, heads):
    """torch's kernel on the same tensors, (B, N, H*D) split into H heads of D."""
    def split(t):
        b, n, inner = t.shape
        return t.reshape(b, n, heads, inner // heads).permute(0, 2, 1, 3)
    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.permute(0, 2, 1, 3).reshape(q.shape[0], q.shape[1], -1)


def explicit_probs(q, k, heads):
    """softmax(Q K^T / sqrt(d)) per head, (B, H, Nq, Nk), in float64."""
    def split(t):
        b, n, inner = t.shape
        return t.double().reshape(b, n, heads, inner // heads).permute(0, 2, 1, 3)
    qh, kh = split(q), split(k)
    return torch.softmax(qh @ kh.transpose(-1, -2) / qh.shape[-1] ** 0.5, dim=-1)


def test_split_and_merge_heads_round_trip_and_layout():
    t = torch.arange(2 * 3 * 12, dtype=torch.float32).reshape(2, 3, 12)
    h = split_heads(t, 4)
    assert h.shape == (2, 4, 3, 3)
    # head j of token n holds channels j*D .. (j+1)*D - 1
    assert torch.equal(h[1, 2, 0], t[1, 0, 6:9])
    assert torch.equal(merge_heads(h), t)


@pytest.mark.parametrize("shape", [dict(), dict(b=1, nq=64, nk=64, heads=8, dim=8), dict(nq=20, nk=7),
                                   dict(b=3, nq=5, nk=50, heads=2, dim=16)])
def test_softmax_attention_equals_sdpa(shape):
    q, k, v = qkv(**shape, scale=2.0)
    heads = shape.get("heads", 4)
    out = softmax_attention(q, k, v, heads)
    assert out.shape == q.shape[:2] + (v.shape[-1],)
    torch.testing.assert_close(out, sdpa(q, k, v, heads), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("limit", [1, 2 * 4 * 37 * 5, 2 * 4 * 37 * 36])
def test_softmax_attention_chunked_equals_sdpa(monkeypatch, limit):
    """Small _CHUNK_ELEMENTS: chunks of 1 query, of 5 (last one partial: 37 = 7*5 + 2), of 36 (+1)."""
    monkeypatch.setattr(amath, "_CHUNK_ELEMENTS", limit)
    q, k, v = qkv(scale=2.0)
    starts = []
    out = softmax_attention(q, k, v, 4, lambda probs, start: starts.append((start, probs.shape)))
    torch.testing.assert_close(out, sdpa(q, k, v, 4), rtol=1e-5, atol=1e-5)
    chunk = max(1, limit // (2 * 4 * 37))
    assert len(starts) == -(-37 // chunk) > 1
    covered = []
    for start, shape in starts:
        assert shape[:2] == (2, 4) and shape[3] == 37
        covered.extend(range(start, start + shape[2]))
    assert covered == list(range(37)), "every query row is seen exactly once, in order"


def test_on_probs_gets_the_softmax_map():
    q, k, v = qkv(nq=11, nk=13)
    seen = []
    softmax_attention(q, k, v, 4, lambda probs, start: seen.append(probs.clone()))
    probs = torch.cat(seen, dim=2)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.double(), explicit_probs(q, k, 4), rtol=1e-5, atol=1e-6)


def test_softmax_attention_keeps_half_precision_dtype():
    q, k, v = qkv()
    out = softmax_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), 4)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), sdpa(q, k, v, 4), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("chunked", [False, True])
def test_key_mass_is_head_mean_summed_over_queries(monkeypatch, chunked):
    if chunked:
        monkeypatch.setattr(amath, "_CHUNK_ELEMENTS", 2 * 8 * 64 * 3)
    q, k, v = qkv(b=2, nq=64, nk=64, heads=8, dim=4, scale=2.0)
    out, mass = attention_with_key_mass(q, k, v, 8)
    torch.testing.assert_close(out, sdpa(q, k, v, 8), rtol=1e-5, atol=1e-5)
    assert mass.shape == (2, 64) and mass.dtype == torch.float32
    expected = explicit_probs(q, k, 8).mean(dim=1).sum(dim=1)   # diffusers' sag_masking: mean(heads), sum(queries)
    torch.testing.assert_close(mass.double(), expected, rtol=1e-5, atol=1e-5)
    # each row of the map sums to one: the mean received attention is exactly 1, per batch item
    torch.testing.assert_close(mass.mean(dim=1), torch.ones(2), rtol=1e-6, atol=1e-6)
    # and some positions are above 1, some below (what SAG's threshold separates)
    assert (mass > 1).any() and (mass < 1).any()


def test_key_mass_depends_on_the_head_count():
    """Reading 4 heads of 8 as 8 heads of 4 is a different map: the head count is not cosmetic."""
    q, k, v = qkv(b=1, nq=16, nk=16, heads=4, dim=8, scale=2.0)
    _, right = attention_with_key_mass(q, k, v, 4)
    _, wrong = attention_with_key_mass(q, k, v, 8)
    assert not torch.allclose(right, wrong, atol=1e-3)
    torch.testing.assert_close(right.double(), explicit_probs(q, k, 4).mean(1).sum(1), rtol=1e-5, atol=1e-5)


def test_identity_attention_returns_v():
    q, k, v = qkv(nq=9, nk=9)
    out = identity_attention(q, k, v, 4)
    assert torch.equal(out, v)
    # whatever q and k are
    assert torch.equal(identity_attention(torch.zeros_like(q), torch.ones_like(k), v, 2), v)
