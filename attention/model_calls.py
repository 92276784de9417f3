"""Model calls the pack makes for itself inside a sampler step, on hosts with ComfyUI-style
batch functions (ComfyUI, Forge, reForge). The adapter passes its host's batch function:
calc(model, conds, x, sigma, model_options) -> one prediction per conds entry
(ComfyUI's comfy.samplers.calc_cond_batch, the Forge host's calc)."""
from .router import ROLES_KEY


def unrouted(model_options, rows=1, layers=(), attend=None):
    """model_options of a call of `rows` conds entries that the router leaves alone (role None:
    no method's hook, no extra rows), with attn2 of `layers` replaced by `attend` for this call only."""
    to = {**model_options.get("transformer_options", {}), ROLES_KEY: [None] * rows}
    if attend is not None:
        replaces = to.get("patches_replace", {})
        attn2 = {**replaces.get("attn2", {}), **{(l.kind, l.block, l.depth): attend for l in layers}}
        to["patches_replace"] = {**replaces, "attn2": attn2}
    return {**model_options, "transformer_options": to}


def run_extra(calc, args, conds, x):
    """An extra model call from a post-CFG function (args: the host's post-CFG arguments)."""
    return calc(args["model"], conds, x, args["sigma"], unrouted(args["model_options"], len(conds)))
