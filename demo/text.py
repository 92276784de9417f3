"""Word-level tokenizer and a tiny transformer text encoder (the demo's CLIP).

Every prompt becomes MAX_TOKENS ids: <start>, the words, <end>, then <pad>; the encoder
returns one vector per position (b, MAX_TOKENS, WIDTH), the UNet's cross-attention context.
The shipped model's encoder is bidirectional: every token sees the whole caption. With
causal=True (as CLIP's text encoder in Stable Diffusion) a token sees only itself and the
tokens before it, so in "a red circle and a blue square" the vector of "circle" describes the
red circle and nothing after it (demo/model_causal.safetensors; README, "Demo model").
"""
import torch
from torch import nn

from .scenes import COLOURS, SHAPES

VOCAB = ("<pad>", "<start>", "<end>", "a", "and", *COLOURS, *SHAPES)
MAX_TOKENS = 16
WIDTH = 64


def tokenize(prompts):
    """(b, MAX_TOKENS) long tensor; unknown words are an error naming the vocabulary."""
    index = {w: i for i, w in enumerate(VOCAB)}
    rows = []
    for prompt in prompts:
        words = prompt.lower().replace(",", " ").split()
        unknown = [w for w in words if w not in index]
        if unknown:
            raise ValueError(f"prompt {prompt!r}: unknown word(s) {unknown}; the demo model knows only "
                             f"{', '.join(VOCAB[3:])}")
        if len(words) + 2 > MAX_TOKENS:
            raise ValueError(f"prompt {prompt!r} has {len(words)} words; at most {MAX_TOKENS - 2} fit")
        ids = [1] + [index[w] for w in words] + [2]
        rows.append(ids + [0] * (MAX_TOKENS - len(ids)))
    return torch.tensor(rows, dtype=torch.long)


class TextEncoder(nn.Module):
    def __init__(self, width=WIDTH, layers=2, heads=4, causal=False):
        super().__init__()
        self.config = dict(width=width, layers=layers, heads=heads, causal=causal)
        self.token_embedding = nn.Embedding(len(VOCAB), width)
        self.position_embedding = nn.Parameter(torch.zeros(MAX_TOKENS, width))
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(width)

    def forward(self, ids):
        h = self.token_embedding(ids) + self.position_embedding
        if self.config["causal"]:
            mask = nn.Transformer.generate_square_subsequent_mask(ids.shape[1], device=ids.device)
            return self.final_norm(self.layers(h, mask=mask, is_causal=True))
        return self.final_norm(self.layers(h))

    def encode(self, prompts):
        return self(tokenize(prompts).to(self.position_embedding.device))
