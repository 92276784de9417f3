"""attention.shared_prefix: where copies of the conditional rows diverge, and which chunks they take."""
from attnguide.attention.layers import Layer, forward_order
from attnguide.attention.router import COND, UNCOND, AttentionHook, Method, Router
from attnguide.attention.shared_prefix import PrefixPlan, plan

D1, D4, MID, U2 = Layer("input", 1, 0), Layer("input", 4, 0), Layer("middle", 0, 0), Layer("output", 2, 0)
SIGMAS = [10.0, 5.0, 2.0, 1.0, 0.0]


def identity(q, k, v, heads, ctx, options, next):
    return v


def pag(key, layers):
    return Method(key, hooks=(AttentionHook(frozenset(layers), lambda ctx, key=key: {key}, identity),), extra_cond_rows=True)


def sag(layer=MID):
    return Method("sag.0", hooks=(AttentionHook(frozenset({layer}), lambda ctx: {UNCOND} if ctx.cfg > 1 else {COND},
                                                identity),))


def step(router, cfg=5.0):
    return router.begin_step(10.0, SIGMAS, cfg)


def test_forward_order():
    layers = [U2, Layer("output", 0, 1), MID, D4, D1, Layer("input", 4, 1)]
    assert sorted(layers, key=forward_order) == [D1, D4, Layer("input", 4, 1), MID, Layer("output", 0, 1), U2]


def test_copy_diverges_at_its_first_hooked_layer():
    router = Router().with_method(pag("pag.0", {U2, MID}))
    assert router.copy_diverges_at(step(router), "pag.0") == MID


def test_a_hook_on_the_source_rows_is_a_divergence_too():
    router = Router().with_method(sag(D4)).with_method(pag("pag.1", {U2}))
    assert router.copy_diverges_at(step(router, cfg=5.0), "pag.1") == U2  # SAG reads the uncond rows
    assert router.copy_diverges_at(step(router, cfg=1.0), "pag.1") == D4  # SAG reads the cond rows


def test_plan_cfg_call_in_comfy_order():
    """ComfyUI batches [pag, uncond, cond] (labels 2, 1, 0); the copy takes the cond chunk."""
    router = Router().with_method(pag("pag.0", {MID}))
    roles = [COND, UNCOND, "pag.0"]
    p = plan(router, step(router), roles, [2, 1, 0], ["c", "u", "c"])
    assert p == PrefixPlan(MID, (1, 2), (1, 0, 1))


def test_plan_cfg1_and_two_copies():
    router = Router().with_method(pag("pag.0", {U2})).with_method(pag("pag.1", {D4}))
    roles = [COND, None, "pag.0", "pag.1"]
    p = plan(router, step(router, cfg=1.0), roles, [3, 2, 0], ["c", "c", "c"])
    assert p == PrefixPlan(D4, (2,), (0, 0, 0))


def test_no_plan_without_a_matching_source_or_when_off():
    router = Router().with_method(pag("pag.0", {MID}))
    roles = [COND, UNCOND, "pag.0"]
    assert plan(router, step(router), roles, [2, 1], ["c", "u"]) is None  # cond ran in another call
    assert plan(router, step(router), roles, [2, 1, 0], ["x", "u", "c"]) is None  # not a copy of this cond
    assert plan(router, step(router), roles, [1, 0], ["u", "c"]) is None  # no copy in the call
    off = Router().with_method(Method("pag.0", hooks=(), extra_cond_rows=True))
    assert plan(off, step(off), roles, [2, 1, 0], ["c", "u", "c"]) is None  # never diverges: not shared
