"""Semantic Guidance on plain A1111 (methods/sega.py's build): each concept's rows join the cond/uncond
UNet call; the edit is added after CFG."""
from ....methods.build import Target
from ....methods.sega import build, concept


def install(session, concepts, **params):
    """concepts: [{prompt, direction, scale, warmup, cooldown, timing, threshold, weight}], prompts as text,
    encoded here with the checkpoint's text encoder for every image of the batch."""
    checked = [concept(i, **c) for i, c in enumerate(concepts)]  # before anything is installed
    built = build(Target(session.method_key("sega")), checked, **params, concept_rows=_texts(session, concepts))
    session.add(built.method, built.post_cfg)


def _texts(session, concepts):
    texts = [session.encode(c["prompt"]) for c in concepts]
    return lambda ctx, i: texts[i]
