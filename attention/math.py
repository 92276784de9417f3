"""Attention kernels the methods need and the hosts do not expose.

Tensors use the host layout: (batch, tokens, heads * dim_head).
"""
import torch

# Keep one chunk of float32 scores under this many elements (~64 MB).
_CHUNK_ELEMENTS = 16 * 1024 * 1024


def split_heads(t, heads):
    b, n, inner = t.shape
    return t.view(b, n, heads, inner // heads).transpose(1, 2)


def merge_heads(t):
    b, h, n, d = t.shape
    return t.transpose(1, 2).reshape(b, n, h * d)


def identity_attention(q, k, v, heads):
    """The attention map replaced by the identity: every token keeps its own value (PAG)."""
    return v


def _prob_chunks(qh, kh):
    """(probs, start) over query chunks: float32 softmax(q k^T / sqrt(d)) shaped (batch, heads,
    chunk_queries, keys), of split-head q and k."""
    b, h, nq, d = qh.shape
    chunk = max(1, min(nq, _CHUNK_ELEMENTS // max(1, b * h * kh.shape[2])))
    kt = kh.float().transpose(-1, -2)
    for start in range(0, nq, chunk):
        yield torch.softmax(qh[:, :, start:start + chunk].float() @ kt * d ** -0.5, dim=-1), start


def softmax_attention(q, k, v, heads, on_probs=None):
    """Plain softmax attention computed in query chunks with float32 scores.

    on_probs(probs, start) is called for every chunk of probabilities, shaped
    (batch, heads, chunk_queries, keys), so a caller can reduce them (column sums,
    maps) without the whole map ever being held.
    """
    qh, kh, vh = split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)
    out = torch.empty_like(qh)
    for probs, start in _prob_chunks(qh, kh):
        if on_probs is not None:
            on_probs(probs, start)
        out[:, :, start:start + probs.shape[2]] = (probs.to(vh.dtype) @ vh)
    return merge_heads(out)


def attention_with_key_mass(q, k, v, heads):
    """Softmax attention plus, per batch item, the total attention each key receives
    from all queries, averaged over heads: shape (batch, keys). Its mean is exactly 1."""
    mass = torch.zeros(q.shape[0], k.shape[1], device=q.device, dtype=torch.float32)

    def add(probs, start):
        mass.add_(probs.sum(dim=(1, 2)))

    out = softmax_attention(q, k, v, heads, add)
    return out, mass / heads


def image_identity_with_text(q, k, v, heads, text_tokens, attend):
    """PAG's perturbed joint attention of StableDiffusion3PAGPipeline: every image query attends
    only to its own key and to all text keys; text queries attend as usual (attend(q, k, v) is
    the host's kernel). The sequence is [text, image]."""
    t = text_tokens
    text_out = attend(q[:, :t], k, v)
    qi, ki, vi = split_heads(q[:, t:], heads).float(), split_heads(k[:, t:], heads).float(), split_heads(v[:, t:], heads)
    kt, vt = split_heads(k[:, :t], heads).float(), split_heads(v[:, :t], heads)
    scale = qi.shape[-1] ** -0.5
    logits = torch.cat([qi @ kt.transpose(-1, -2), (qi * ki).sum(-1, keepdim=True)], dim=-1) * scale
    probs = torch.softmax(logits, dim=-1)
    image_out = probs[..., :t] @ vt.float() + probs[..., t:] * vi.float()
    return torch.cat([text_out, merge_heads(image_out.to(v.dtype))], dim=1)


def self_attention_key_mass(q, k, heads):
    """The key mass of attention_with_key_mass (per batch item, the head-averaged attention each
    key receives from all queries; mean exactly 1) without computing the output."""
    mass = torch.zeros(q.shape[0], k.shape[1], device=q.device, dtype=torch.float32)
    for probs, _ in _prob_chunks(split_heads(q, heads), split_heads(k, heads)):
        mass.add_(probs.sum(dim=(1, 2)))
    return mass / heads
