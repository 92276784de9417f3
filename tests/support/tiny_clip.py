"""A tiny offline CLIP tokenizer and random text encoder (reference-algorithms.md section 9).

The tokenizer is a byte-level BPE with merges for a few whole words, so prompts made of
those words tokenize one token per word; any other text still tokenizes byte by byte.
"""
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

WORDS = ("a", "cat", "dog", "frog", "and", "photo", "of", "the", "painting", "smiling", "glasses", "red", "hat",
         "sunglasses", "blue", "sky")


def _byte_symbols():
    """GPT-2's reversible map from bytes to printable unicode symbols."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def tokenizer():
    symbols = _byte_symbols()
    vocab = {}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(s, len(vocab))
    merges = []
    for word in WORDS:
        if len(word) < 2:
            continue
        prefix = word[0]
        for i, ch in enumerate(word[1:], start=1):
            right = ch + "</w>" if i == len(word) - 1 else ch
            merged = prefix + right
            if (prefix, right) not in merges:
                merges.append((prefix, right))
            vocab.setdefault(merged, len(vocab))
            prefix = merged
    vocab.setdefault("<|startoftext|>", len(vocab))
    vocab.setdefault("<|endoftext|>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def text_encoder(tok, hidden=32, seed=0):
    torch.manual_seed(seed)
    config = CLIPTextConfig(hidden_size=hidden, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                            max_position_embeddings=77, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return CLIPTextModel(config).eval().requires_grad_(False)


def encode(tok, encoder, prompts):
    """What the diffusers pipelines compute for a list of prompts: padded to 77, last hidden state."""
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    return encoder(ids)[0]
