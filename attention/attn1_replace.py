"""The attn1 replace patch through which old-style patchers (ComfyUI without attention
override, Forge, reForge) send a self-attention layer to the model's router. The host gives
its attention kernel; rows no method claims go to the patch that was on the layer before
(another extension's), else to that kernel."""
from .router import ROUTER_KEY


class RoutedAttn1Replace:
    def __init__(self, layer, previous, kernel):
        """kernel(q, k, v, heads, extra_options) -> out: the host's own attention."""
        self.layer, self.previous, self.kernel = layer, previous, kernel

    def __deepcopy__(self, memo):
        return self

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]

        def base(q, k, v, labels):
            if self.previous is None:
                return self.kernel(q, k, v, heads, extra_options)
            return self.previous(q, k, v, with_labels(extra_options, labels))

        router = extra_options.get(ROUTER_KEY)
        if router is None:
            return base(q, k, v, extra_options.get("cond_or_uncond"))
        return router.attend(q, k, v, heads, self.layer, extra_options, base)


def with_labels(options, labels):
    """The options as seen by code that gets only the rows of chunks `labels`."""
    if labels is None or labels == options.get("cond_or_uncond"):
        return options
    return {**options, "cond_or_uncond": list(labels)}


def chain_foreign(to, router, kernel):
    """transformer_options of a step in which another pack's attn1 replace on one of the router's
    layers (whenever it was set) is wrapped so both run: it gets the rows no hook claims."""
    replaces = to.get("patches_replace", {}).get("attn1", {})
    foreign = {}
    for layer in router.layers:
        key = (layer.kind, layer.block, layer.depth)
        fn = replaces.get(key, replaces.get(key[:2]))
        if fn is not None and not isinstance(fn, RoutedAttn1Replace):
            foreign[key] = RoutedAttn1Replace(layer, fn, kernel)
    if not foreign:
        return to
    return {**to, "patches_replace": {**to["patches_replace"], "attn1": {**replaces, **foreign}}}
