"""Cross-attention maps that stay in the autograd graph, for methods that move the
latent against them (Attend-and-Excite, Pix2Pix-Zero).

Tensors use the host layout: (batch, tokens, heads * dim_head).
"""
import torch

from .math import merge_heads, split_heads


def cross_attention_probs(q, k, heads):
    """softmax(q k^T / sqrt(d)) in float32, shaped (batch, heads, queries, keys)."""
    qh, kh = split_heads(q, heads), split_heads(k, heads)
    scale = qh.shape[-1] ** -0.5
    return torch.softmax((qh.float() @ kh.float().transpose(-1, -2)) * scale, dim=-1)


def attention_from_probs(probs, v, heads):
    return merge_heads(probs.to(v.dtype) @ split_heads(v, heads))


class MapStore:
    """Collects the probabilities of the chosen layers during one forward and averages
    them over layers and heads: mean() is (batch, queries, keys)."""

    def __init__(self, queries):
        self.queries = queries
        self.maps = []

    def attend(self, q, k, v, heads):
        probs = cross_attention_probs(q, k, heads)
        if probs.shape[2] == self.queries:
            self.maps.append(probs)
        return attention_from_probs(probs, v, heads)

    def mean(self):
        if not self.maps:
            return None
        return torch.cat(self.maps, dim=1).mean(dim=1)


class ReferenceMaps:
    """One step's cross-attention probabilities of a reference forward, per row group
    (e.g. "uncond", "cond") in forward order, read back in the same order by a later
    forward of the same UNet (Pix2Pix-Zero). dtype: the precision they are held in."""

    def __init__(self, dtype=torch.float32):
        self.dtype = dtype
        self.maps = {}
        self._read = {}

    def record(self, key, probs):
        self.maps.setdefault(key, []).append(probs.detach().to(self.dtype))

    def next(self, key):
        i = self._read.get(key, 0)
        if i >= len(self.maps.get(key, ())):
            raise RuntimeError(f"the forward reads more cross-attention layers ({i + 1}) for {key!r} than the "
                               f"reference forward recorded ({len(self.maps.get(key, ()))})")
        self._read[key] = i + 1
        return self.maps[key][i]

    def nbytes(self):
        return sum(m.numel() * m.element_size() for maps in self.maps.values() for m in maps)
