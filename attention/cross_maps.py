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
