"""The attn2 replace patches of Pix2Pix-Zero's cross-attention guidance (ComfyUI, Forge, reForge):
the reference forward records its maps, the edit's grad-enabled forward is compared with them
layer by layer (guidance.pix2pix_zero.map_loss)."""
from ..guidance.pix2pix_zero import map_loss
from .cross_maps import attention_from_probs, cross_attention_probs


def recording(maps, key, seen=None):
    """attn2 replace: the layer's attention, its probabilities recorded in `maps`
    (attention.cross_maps.ReferenceMaps) under `key`, then shown to seen(probs)."""
    def attend(q, k, v, extra_options):
        probs = cross_attention_probs(q, k, extra_options["n_heads"])
        maps.record(key, probs)
        if seen is not None:
            seen(probs)
        return attention_from_probs(probs, v, extra_options["n_heads"])
    return attend


def comparing(maps, key, halves, loss):
    """attn2 replace: the layer's attention, its map loss against the next recorded map of `key`
    added to loss["value"] (halves: guided CFG halves, see map_loss)."""
    def attend(q, k, v, extra_options):
        probs = cross_attention_probs(q, k, extra_options["n_heads"])
        term = map_loss(probs, maps.next(key), halves)
        loss["value"] = term if "value" not in loss else loss["value"] + term
        return attention_from_probs(probs, v, extra_options["n_heads"])
    return attend
