"""Which chunks of a model call may share the conditional chunk's computation, and up to where.

A method with extra_cond_rows (PAG) adds a copy of the conditional rows to the main call:
same latent, sigma and conditioning. Such a copy computes exactly what its source computes
until the first layer where the router runs different hooks on the two (Router.copy_diverges_at).
The host adapter runs the call without the copies up to that layer, then gathers the copies'
rows from their sources and goes on with the whole batch.

Chunks are the host's batch chunks: `labels[i]` indexes `roles`, `uuids[i]` names the
conditioning entry the chunk came from (a copy has its source's uuid).
"""
from typing import NamedTuple

from .layers import forward_order
from .router import COND


class PrefixPlan(NamedTuple):
    split: object   # attention.layers.Layer: the first layer a copy computes differently
    prefix: tuple   # positions of the chunks the shared part runs, in call order
    gather: tuple   # for every chunk of the call, the prefix position whose rows it takes at the split


def plan(router, ctx, roles, labels, uuids):
    """A PrefixPlan for one model call, or None when no chunk is a shareable copy."""
    if not labels or uuids is None or len(uuids) != len(labels):
        return None
    role_of = [roles[label] if label < len(roles) else None for label in labels]
    copying = {m.key for m in router.methods if m.extra_cond_rows and m.key in ctx.active}
    sources = {}
    for i, role in enumerate(role_of):
        if role not in copying:
            continue
        found = [j for j, r in enumerate(role_of) if r == COND and uuids[j] is not None and uuids[j] == uuids[i]]
        if len(found) == 1:
            sources[i] = found[0]
    splits = [router.copy_diverges_at(ctx, role_of[i]) for i in sources]
    if not sources or None in splits:
        return None  # a copy that never diverges would be better served by copying the output; rare, not shared
    prefix = tuple(i for i in range(len(labels)) if i not in sources)
    position = {chunk: p for p, chunk in enumerate(prefix)}
    gather = tuple(position[sources.get(i, i)] for i in range(len(labels)))
    return PrefixPlan(min(splits, key=forward_order), prefix, gather)
