"""Semantic Guidance on plain A1111: each concept's rows join the cond/uncond UNet call; the edit is
added after CFG (guidance.sega)."""
from ....attention.router import Method
from ....guidance.schedule import step_at
from ....guidance.sega import Concept, sega_denoised


def install(session, concepts, momentum_scale, momentum_beta):
    """concepts: [{prompt, direction, scale, warmup, cooldown, timing, threshold, weight}], prompts as text,
    encoded here with the checkpoint's text encoder for every image of the batch."""
    if not concepts:
        raise ValueError("Semantic Guidance (AttnGuide): no concepts. Type at least one concept prompt.")
    for c in concepts:  # the core's checks, with its messages, before anything is installed
        _concept(c, 100)
    key = session.method_key("sega")
    roles = [f"{key}.concept{i}" for i in range(len(concepts))]
    texts = [session.encode(c["prompt"]) for c in concepts]

    def extra_rows(ctx, conds):
        return list(zip(roles, texts))

    def post(step):
        predicted = [step.image_rows(role) for role in roles]
        if any(p is None for p in predicted):
            return step.denoised
        state = session.run_state(key)
        out, state["momentum"] = sega_denoised(step.x, step.sigma, step.denoised, step.uncond_denoised, predicted,
                                               [_concept(c, step.ctx.steps) for c in concepts], step.ctx.step,
                                               state.get("momentum"), momentum_scale, momentum_beta)
        return out

    session.add(Method(key, extra_rows=extra_rows), post)


def _concept(c, steps):
    return Concept(scale=c["scale"], reverse=c["direction"] == "remove", warmup=step_at(c["warmup"], c["timing"], steps),
                   cooldown=None if c["cooldown"] < 0 else step_at(c["cooldown"], c["timing"], steps),
                   threshold=c["threshold"], weight=c["weight"])
