"""The text of a WebUI conditioning, as A1111 and Forge give it: a tensor, or SDXL's dict
whose "crossattn" is the cross-attention text."""


def cross_attention_text(cond):
    return cond["crossattn"] if isinstance(cond, dict) else cond


def one_window_sentences(cond, title, name):
    """Encoded sentences (sentences, 77, width), float on the CPU, for an edit direction that is
    added to a prompt of one 75-token window."""
    text = cross_attention_text(cond)
    if text.shape[1] != 77:
        raise ValueError(f"{title}: {name}: a sentence is longer than one 75-token window; shorten it (the direction "
                         "is added to a prompt of one window).")
    return text.float().cpu()
