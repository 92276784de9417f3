"""Attend-and-Excite's grad-enabled measuring forwards on hosts with ComfyUI-style model calls
(ComfyUI, Forge, reForge): per image, a conditional forward whose cross-attention of one level
is captured by attn2 replace patches that exist only in that forward, stopped once the last of
those layers is captured. The adapter gives its batch function (attention.model_calls);
methods/attend_excite.py moves the latent with it."""

from .cond_items import item_conds
from .cross_maps import MapStore
from .model_calls import unrouted


class _Measured(Exception):
    """Ends a measuring forward once the last map is captured."""


def map_evaluator(calc, model, conds, sigma, model_options, layers, h, w, downscale, indices, name):
    """evaluate(x, item): image `item`'s cross-attention of `layers` at latent x (batch 1),
    averaged over layers and heads, as (h, w, tokens) in the autograd graph."""
    def evaluate(x, item):
        store = MapStore(h * w)

        def capture(q, k, v, extra_options):
            out = store.attend(q, k, v, extra_options["n_heads"])
            if len(store.maps) == len(layers):
                raise _Measured  # the rest of the UNet cannot change the maps: skip it
            return out

        # roles None: the router's hooks (SAG, PAG) and its extra rows leave this call alone
        try:
            calc(model, [item_conds(conds, item)], x, sigma.clone(), unrouted(model_options, 1, layers, capture))
        except _Measured:
            pass
        return measured_maps(store, indices, name, h, w, downscale)
    return evaluate


def measured_maps(store, indices, name, h, w, downscale):
    """The captured maps of one measuring forward as (h, w, tokens), checked against the token indices."""
    attention = store.mean()
    if attention is None:
        raise RuntimeError(f"{name}: no cross-attention map of {h}x{w} was captured at the chosen "
                           f"attention_downscale {downscale}; this latent size does not reach it.")
    if max(indices) >= attention.shape[-1] - 1:
        raise ValueError(f"{name}: token index {max(indices)} is past the prompt's last position "
                         f"({attention.shape[-1] - 2}).")
    return attention[0].reshape(h, w, -1)
