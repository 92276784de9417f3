"""Token positions of words in a prompt, with the host's own tokenizer (a CLIP object).

Positions count the way the conditioning is laid out: <|startoftext|> at 0, and a prompt
longer than one window continues at 77, 154, ... A word that the tokenizer splits into
several pieces ("giraffe" -> "gir", "affe</w>") is matched as the whole sequence of pieces
and excited through its last piece: the text encoder is causal, so only the last piece has
seen the whole word.
"""
import re

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


def prompt_words(tokens):
    words, current = [], ""
    for _, _, piece in tokens:
        current += piece
        if piece.endswith("</w>"):
            words.append(current[:-4])
            current = ""
    return words + ([current] if current else [])


def word_indices(clip, text, words):
    """Token index of each comma-separated word (its last piece, first occurrence)."""
    tokens = prompt_tokens(clip, text)
    ids = [t for _, t, _ in tokens]
    names = [w.strip() for w in re.split(r"[,\n]", words or "") if w.strip()]
    if not names:
        raise ValueError("words is empty: name the subjects to excite, comma separated, e.g. 'cat, frog' "
                         "(or give token_indices).")
    indices = []
    for name in names:
        wanted = [t for _, t, _ in prompt_tokens(clip, name)]
        hit = next((i for i in range(len(ids) - len(wanted) + 1) if wanted and ids[i:i + len(wanted)] == wanted), None)
        if hit is None:
            raise ValueError(f"words: '{name}' is not in the prompt. The prompt's words are: "
                             f"{', '.join(prompt_words(tokens)) or '(none)'}. Use one of them exactly as written "
                             "(the prompt input must be the text of the positive CLIP Text Encode).")
        indices.append(tokens[hit + len(wanted) - 1][0])
    return tuple(indices)


def parse_indices(text):
    try:
        indices = tuple(int(i) for i in re.split(r"[,\s]+", text.strip()) if i)
    except ValueError:
        raise ValueError(f"token_indices: cannot read '{text}'. Write token positions separated by commas, "
                         "e.g. '2, 5' (<|startoftext|> is 0).") from None
    if any(i < 1 for i in indices):
        raise ValueError(f"token_indices: {text!r}: positions start at 1 (0 is <|startoftext|>, which cannot be excited).")
    return indices
