"""Attend-and-Excite's inputs, host-free: step inputs (a step index "10" or a percent of the
steps the sampler runs "20%", resolved when the sampler's step count is known), the words'
token positions in a prompt (found with the host's tokenizer, given as `tokens_of`), and
explicit token positions."""
import math
import re


def parse_step(text, input_name):
    text = str(text).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(%?)", text)
    if not match or (not match.group(2) and "." in match.group(1)):
        raise ValueError(f"{input_name}: cannot read '{text}'. Write a step number (25) or a percent of the "
                         "sampler's steps (50%).")
    value = float(match.group(1))
    if match.group(2) and value > 100:
        raise ValueError(f"{input_name}: '{text}' is above 100%.")
    return value, bool(match.group(2))


def parse_thresholds(text):
    """'0: 0.05, 10: 0.5, 20: 0.8' (or '0%: 0.05, 20%: 0.5') -> ((step spec, threshold), ...)."""
    out = []
    for item in (i.strip() for i in re.split(r"[,\n]", text or "") if i.strip()):
        key, sep, value = item.partition(":")
        try:
            threshold = float(value)
        except ValueError:
            threshold = None
        if not sep or threshold is None or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"thresholds: cannot read '{item}'. Write step: threshold pairs with thresholds in "
                             "0..1, e.g. '0: 0.05, 10: 0.5, 20: 0.8' (steps may be percents: '20%: 0.5'), "
                             "or leave it empty for no iterative refinement.")
        out.append((parse_step(key, "thresholds"), threshold))
    return tuple(out)


def resolve(spec, steps):
    value, percent = spec
    return int(math.floor(value * steps / 100 + 1e-9)) if percent else int(value)


def prompt_words(tokens):
    """The words of [(position, token id, piece)], pieces joined up to their '</w>' ends."""
    words, current = [], ""
    for _, _, piece in tokens:
        current += piece
        if piece.endswith("</w>"):
            words.append(current[:-4])
            current = ""
    return words + ([current] if current else [])


def find_words(tokens_of, text, words, hint=""):
    """Token index of each comma-separated word (its last piece, first occurrence).

    tokens_of(text) -> [(position, token id, piece)] of the text tokens (no start, end or
    padding), positions as the conditioning lays them out (<|startoftext|> at 0)."""
    return match_words(tokens_of(text), words, lambda name: [t for _, t, _ in tokens_of(name)], hint)


def match_words(tokens, words, word_ids, hint=""):
    """find_words on the prompt's tokens [(position, id, piece)]; word_ids(word) -> the
    word's token ids; hint: the host's advice appended to a word-not-found error."""
    ids = [t for _, t, _ in tokens]
    names = [w.strip() for w in re.split(r"[,\n]", words or "") if w.strip()]
    if not names:
        raise ValueError("words is empty: name the subjects to excite, comma separated, e.g. 'cat, frog' "
                         "(or give token_indices).")
    indices = []
    for name in names:
        wanted = list(word_ids(name))
        hit = next((i for i in range(len(ids) - len(wanted) + 1) if wanted and ids[i:i + len(wanted)] == wanted), None)
        if hit is None:
            raise ValueError(f"words: '{name}' is not in the prompt. The prompt's words are: "
                             f"{', '.join(prompt_words(tokens)) or '(none)'}. Use one of them exactly as written"
                             f"{hint}.")
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
