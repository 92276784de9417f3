"""Semantic Guidance on a Forge/reForge patcher (the ComfyUI node's behaviour, nodes/sega.py).
Every concept row runs in the step's main UNet call: the conditional rows with the concept's text."""
from ....attention.router import Method, step_context
from ....guidance.sega import sega_denoised, timed_concept
from .params import CONCEPT_DEFAULTS, method_key
from .router import COND_LABEL, Rows, install, warn_once


class _Concept:
    def __init__(self, index, params, encode):
        unknown = sorted(set(params) - set(CONCEPT_DEFAULTS))
        if unknown:
            raise ValueError(f"SEGA concept {index + 1}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
                             f"a concept has {', '.join(CONCEPT_DEFAULTS)}")
        p = {**CONCEPT_DEFAULTS, **params}
        self.label = p["prompt"].strip() or f"concept {index + 1}"
        conditioning = p["conditioning"]
        if conditioning is None:
            if not p["prompt"].strip():
                raise ValueError(f"SEGA concept {index + 1}: 'prompt' is empty. Type the concept to add or remove "
                                 "(e.g. 'sunglasses').")
            if encode is None:
                raise ValueError(f"SEGA concept {self.label!r}: no text encoder; the WebUI script passes "
                                 "params['encode'] (texts -> conditioning, like sd_model.get_learned_conditioning).")
            conditioning = encode([p["prompt"]])
        self.crossattn, self.vector = (conditioning["crossattn"], conditioning.get("vector")) \
            if isinstance(conditioning, dict) else (conditioning, None)
        if p["direction"] not in ("add", "remove"):
            raise ValueError(f"SEGA concept {self.label!r}: direction must be 'add' or 'remove', not {p['direction']!r}")
        cooldown = None if p["cooldown"] < 0 else p["cooldown"]
        self.at = lambda steps: timed_concept(steps, p["scale"], p["direction"] == "remove", p["warmup"], cooldown,
                                              p["timing"], p["threshold"], p["weight"])
        self.at(100)  # validates threshold, weight, warmup, cooldown, timing with the core's messages


def apply_sega(patcher, concepts, momentum_scale, momentum_beta, encode=None, sigmas=None, **_host):
    """concepts: dicts keyed like the SEGA Concept node's inputs (prompt, direction, scale, warmup,
    cooldown, timing, threshold, weight), or with 'conditioning' already encoded instead of 'prompt'."""
    if not concepts:
        raise ValueError("SEGA: no concepts. Give at least one concept prompt to add or remove.")
    concepts = [_Concept(i, c, encode) for i, c in enumerate(concepts)]
    m = patcher.clone()
    key = method_key(m, "sega")
    names = [f"{key}.concept{i}" for i in range(len(concepts))]

    def extra_rows(ctx, conds):
        return [(name, Rows(COND_LABEL, c.crossattn, c.vector)) for name, c in zip(names, concepts)]

    def post_cfg(args):
        ctx = step_context(args["model_options"])
        if ctx is None or key not in ctx.active:
            return args["denoised"]
        predicted = [ctx.extra_outputs.get(name) for name in names]
        if args["uncond"] is None or any(p is None for p in predicted):
            warn_once(ctx, "SEGA: the concepts were not evaluated in this step (another extension replaced the "
                           "UNet function wrapper?); SEGA does nothing here.")
            return args["denoised"]
        state = ctx.run.setdefault(key, {}) if ctx.run is not None else {}
        out, state["momentum"] = sega_denoised(args["input"], args["sigma"], args["denoised"], args["uncond_denoised"],
                                               predicted, [c.at(ctx.steps) for c in concepts], ctx.step,
                                               state.get("momentum"), momentum_scale, momentum_beta)
        return out

    install(m, Method(key, extra_rows=extra_rows), sigmas)
    # the edit is measured from the negative prompt: evaluate it at CFG 1 too (the node adds it as a row)
    m.set_model_sampler_post_cfg_function(post_cfg, disable_cfg1_optimization=True)
    return m
