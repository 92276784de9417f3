"""Semantic Guidance on a Forge/reForge patcher (the ComfyUI node's behaviour, nodes/sega.py).
Every concept row runs in the step's main UNet call: the conditional rows with the concept's text."""
from ....methods.build import Target
from ....methods.sega import SPEC, build, concept
from .params import CONCEPT_DEFAULTS, method_key
from .router import COND_LABEL, Rows, install_built


def _concept(index, params, encode):
    """(SegaConcept, its Rows) from a dict keyed like the SEGA Concept node's inputs."""
    unknown = sorted(set(params) - set(CONCEPT_DEFAULTS))
    if unknown:
        raise ValueError(f"SEGA concept {index + 1}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
                         f"a concept has {', '.join(CONCEPT_DEFAULTS)}")
    p = {**CONCEPT_DEFAULTS, **params}
    conditioning = p.pop("conditioning")
    c = concept(index, **p)
    if conditioning is None:
        if not p["prompt"].strip():
            raise ValueError(f"SEGA concept {index + 1}: 'prompt' is empty. Type the concept to add or remove "
                             "(e.g. 'sunglasses').")
        if encode is None:
            raise ValueError(f"SEGA concept {c.label!r}: no text encoder; the WebUI script passes "
                             "params['encode'] (texts -> conditioning, like sd_model.get_learned_conditioning).")
        conditioning = encode([p["prompt"]])
    if isinstance(conditioning, dict):
        return c, Rows(COND_LABEL, conditioning["crossattn"], conditioning.get("vector"))
    return c, Rows(COND_LABEL, conditioning)


def apply_sega(patcher, concepts, encode=None, sigmas=None, **params):
    """concepts: dicts keyed like the SEGA Concept node's inputs (prompt, direction, scale, warmup,
    cooldown, timing, threshold, weight), or with 'conditioning' already encoded instead of 'prompt'."""
    parts = [_concept(i, c, encode) for i, c in enumerate(concepts or [])]
    m = patcher.clone()
    built = build(Target(method_key(m, "sega")), [c for c, _ in parts], **SPEC.values(params),
                  concept_rows=lambda ctx, i: parts[i][1])
    # the edit is measured from the negative prompt: evaluate it at CFG 1 too (the node adds it as a row)
    install_built(m, built, sigmas, disable_cfg1_optimization=True)
    return m
