"""Token positions of words in a prompt, with the host's own tokenizer (a CLIP object).

Positions count the way the conditioning is laid out: <|startoftext|> at 0, and a prompt
longer than one window continues at 77, 154, ... A word that the tokenizer splits into
several pieces ("giraffe" -> "gir", "affe</w>") is matched as the whole sequence of pieces
and excited through its last piece: the text encoder is causal, so only the last piece has
seen the whole word.
"""
from ..guidance.excite_inputs import find_words

_SPECIAL = ("<|startoftext|>", "<|endoftext|>")


def prompt_tokens(clip, text):
    """[(position, token id, piece)] of the text tokens: no start, end or padding."""
    chunks = clip.tokenize(text)
    key = "l" if "l" in chunks else next(iter(chunks))
    out, offset = [], 0
    for chunk in chunks[key]:
        for j, item in enumerate(chunk):
            token = item[0]
            if not isinstance(token, int):  # a textual-inversion embedding: no piece to match
                continue
            piece = clip.tokenizer.untokenize([item])[0][1]
            if piece == _SPECIAL[1]:
                break
            if piece != _SPECIAL[0]:
                out.append((offset + j, token, piece))
        offset += len(chunk)
    return out


def word_indices(clip, text, words):
    """Token index of each comma-separated word (its last piece, first occurrence)."""
    return find_words(lambda t: prompt_tokens(clip, t), text, words,
                      " (the prompt input must be the text of the positive CLIP Text Encode)")
