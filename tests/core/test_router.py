"""attention.router: which rows each hook sees, stacking on one layer, schedules, extra cond rows.

The fake host below does what the ComfyUI glue does: one options dict per model call with the
chunk labels ("cond_or_uncond": index of each chunk's entry in the step's conds list), the step
context and the role of every conds entry. Row r of chunk c is filled with 100 * label + r, so
every hook and the base kernel can tell which rows they got.
"""
import copy

import pytest
import torch
from attnguide.attention.layers import Layer
from attnguide.attention.router import COND, ROLES_KEY, STEP_KEY, UNCOND, AttentionHook, Method, Router, StepContext
from attnguide.attention.step_window import Schedule

MID = Layer("middle", 0, 0)
D4 = Layer("input", 4, 0)
SIGMAS = [10.0, 5.0, 2.0, 1.0, 0.0]
ROWS, TOKENS, HEADS, DIM = 2, 3, 2, 4


def batch(labels):
    """q, k, v of one model call: chunk i (label labels[i]) has ROWS rows valued 100*label + row."""
    rows = [torch.full((1, TOKENS, HEADS * DIM), float(100 * label + r)) for label in labels for r in range(ROWS)]
    q = torch.cat(rows)
    return q, q + 0.25, q + 0.5


def row_ids(t):
    return [int(round(float(x))) for x in t[:, 0, 0]]


class Recorder:
    """A base kernel and hooks that record what they saw and tag what they return."""

    def __init__(self):
        self.calls = []

    def base(self, q, k, v, labels=None):
        self.calls.append(("base", row_ids(q), None if labels is None else list(labels)))
        return v + 1000.0          # "attention" of the host

    def hook(self, name, transform):
        def fn(q, k, v, heads, ctx, options, next):
            assert heads == HEADS and isinstance(ctx, StepContext) and STEP_KEY in options
            self.calls.append((name, row_ids(q)))
            return transform(q, k, v, next)
        return fn


def options(ctx, roles, labels):
    return {"cond_or_uncond": list(labels), STEP_KEY: ctx, ROLES_KEY: roles}


def router_with(*methods):
    r = Router()
    for m in methods:
        r = r.with_method(m)
    return r


def expected_rows(labels, fn):
    """The output expected per row: fn(label, row value of v) for every row."""
    out = []
    for label in labels:
        for r in range(ROWS):
            out.append(fn(label, 100 * label + r + 0.5))
    return torch.tensor(out)


# --- rows ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("labels", [[0, 1, 2], [2, 0, 1], [1, 2, 0]])
def test_hook_sees_only_the_rows_of_its_role(labels):
    rec = Recorder()
    pag = Method("pag.0", hooks=(AttentionHook(frozenset({MID}), lambda ctx: {"pag.0"},
                                               rec.hook("pag", lambda q, k, v, nxt: v * 2)),),
                 extra_cond_rows=True)
    router = router_with(pag)
    ctx = router.begin_step(10.0, SIGMAS, 7.0)
    _, roles = router.extend_main_batch(ctx, ["c", "u"])
    assert roles == [COND, UNCOND, "pag.0"]
    q, k, v = batch(labels)
    out = router.attend(q, k, v, HEADS, MID, options(ctx, roles, labels), rec.base)
    assert out.shape == q.shape
    assert [c for c in rec.calls if c[0] == "pag"] == [("pag", [200, 201])]
    # the other rows went to base, with the labels of the chunks they belong to, in order
    bases = [c for c in rec.calls if c[0] == "base"]
    assert sorted(r for c in bases for r in c[1]) == sorted(100 * l + r for l in labels if l != 2 for r in range(ROWS))
    for _, ids, got_labels in bases:
        assert got_labels == [i // 100 for i in ids[::ROWS]]
    # and each row came back in its place
    expected = expected_rows(labels, lambda label, val: val * 2 if label == 2 else val + 1000)
    torch.testing.assert_close(out[:, 0, 0], expected)


def test_role_may_depend_on_the_step():
    """SAG-like: the uncond rows with CFG, the cond rows without (ctx.cfg decides)."""
    rec = Recorder()
    hook = AttentionHook(frozenset({MID}), lambda ctx: {UNCOND} if ctx.cfg > 1 else {COND},
                         rec.hook("sag", lambda q, k, v, nxt: nxt(q, k, v)))
    router = router_with(Method("sag.0", hooks=(hook,)))

    ctx = router.begin_step(10.0, SIGMAS, 7.5)
    _, roles = router.extend_main_batch(ctx, ["c", "u"])
    assert roles == [COND, UNCOND]                       # SAG asks for no extra rows
    q, k, v = batch([0, 1])
    out = router.attend(q, k, v, HEADS, MID, options(ctx, roles, [0, 1]), rec.base)
    assert ("sag", [100, 101]) in rec.calls
    torch.testing.assert_close(out, v + 1000)            # the hook passed through to base

    rec.calls.clear()
    ctx = router.begin_step(10.0, SIGMAS, 1.0)
    _, roles = router.extend_main_batch(ctx, ["c", None])
    q, k, v = batch([0])
    router.attend(q, k, v, HEADS, MID, options(ctx, roles, [0]), rec.base)
    assert rec.calls == [("sag", [0, 1]), ("base", [0, 1], [0])]


def test_two_methods_on_one_layer_both_apply_in_install_order():
    rec = Recorder()
    a = Method("a", hooks=(AttentionHook(frozenset({MID}), lambda ctx: {COND, UNCOND},
                                         rec.hook("a", lambda q, k, v, nxt: nxt(q, k, v) + 1)),))
    b = Method("b", hooks=(AttentionHook(frozenset({MID, D4}), lambda ctx: {UNCOND},
                                         rec.hook("b", lambda q, k, v, nxt: nxt(q, k, v) * 10)),))
    router = router_with(a, b)
    assert router.layers == {MID, D4}
    ctx = router.begin_step(5.0, SIGMAS, 7.0)
    _, roles = router.extend_main_batch(ctx, ["c", "u"])
    q, k, v = batch([0, 1])
    out = router.attend(q, k, v, HEADS, MID, options(ctx, roles, [0, 1]), rec.base)
    # cond rows: a(base); uncond rows: a(b(base))
    expected = expected_rows([0, 1], lambda label, val: (val + 1000) * (10 if label == 1 else 1) + 1)
    torch.testing.assert_close(out[:, 0, 0], expected)
    assert ("a", [0, 1]) in rec.calls and ("a", [100, 101]) in rec.calls and ("b", [100, 101]) in rec.calls
    assert ("b", [0, 1]) not in rec.calls
    # on D4 only b is installed
    rec.calls.clear()
    out = router.attend(q, k, v, HEADS, D4, options(ctx, roles, [0, 1]), rec.base)
    expected = expected_rows([0, 1], lambda label, val: (val + 1000) * (10 if label == 1 else 1))
    torch.testing.assert_close(out[:, 0, 0], expected)


def test_each_extra_role_gets_its_own_hook():
    rec = Recorder()
    methods = [Method(key, hooks=(AttentionHook(frozenset({MID}), lambda ctx, key=key: {key},
                                                rec.hook(key, lambda q, k, v, nxt, f=f: v * f)),), extra_cond_rows=True)
               for key, f in (("p1", 2.0), ("p2", 3.0))]
    router = router_with(*methods)
    ctx = router.begin_step(10.0, SIGMAS, 7.0)
    conds, roles = router.extend_main_batch(ctx, ["c", "u"])
    assert conds == ["c", "u", "c", "c"] and roles == [COND, UNCOND, "p1", "p2"]
    labels = [3, 0, 2, 1]
    q, k, v = batch(labels)
    out = router.attend(q, k, v, HEADS, MID, options(ctx, roles, labels), rec.base)
    factor = {3: 3.0, 2: 2.0}
    expected = expected_rows(labels, lambda label, val: val * factor[label] if label in factor else val + 1000)
    torch.testing.assert_close(out[:, 0, 0], expected)
    assert ("p1", [200, 201]) in rec.calls and ("p2", [300, 301]) in rec.calls


# --- schedules ----------------------------------------------------------------------------------------

def test_inactive_methods_do_nothing():
    rec = Recorder()
    late = Method("late", Schedule(0.5, 1.0),
                  hooks=(AttentionHook(frozenset({MID}), lambda ctx: {COND, "late"},
                                       rec.hook("late", lambda q, k, v, nxt: v * 0)),),
                  extra_cond_rows=True)
    early = Method("early", Schedule(0.0, 0.5),
                   hooks=(AttentionHook(frozenset({MID}), lambda ctx: {COND},
                                        rec.hook("early", lambda q, k, v, nxt: nxt(q, k, v) - 1)),))
    router = router_with(late, early)

    ctx = router.begin_step(torch.tensor([10.0]), SIGMAS, 7.0)         # step 0 of 4
    assert (ctx.step, ctx.steps, ctx.active) == (0, 4, {"early"})
    conds, roles = router.extend_main_batch(ctx, ["c", "u"])
    assert conds == ["c", "u"] and roles == [COND, UNCOND]            # no extra rows while inactive
    q, k, v = batch([0, 1])
    out = router.attend(q, k, v, HEADS, MID, options(ctx, roles, [0, 1]), rec.base)
    torch.testing.assert_close(out[:, 0, 0], expected_rows([0, 1], lambda l, val: val + 1000 - (l == 0)))
    assert not any(c[0] == "late" for c in rec.calls)

    rec.calls.clear()
    ctx = router.begin_step(3.0, SIGMAS, 7.0)     # between 5 and 2: a Heun-like stage inside step 1
    assert (ctx.step, ctx.active) == (1, {"early"})
    ctx = router.begin_step(2.0, SIGMAS, 7.0)     # step 2
    assert ctx.active == {"late"}
    conds, roles = router.extend_main_batch(ctx, ["c", "u"])
    assert conds == ["c", "u", "c"] and roles == [COND, UNCOND, "late"]
    q, k, v = batch([0, 1, 2])
    out = router.attend(q, k, v, HEADS, MID, options(ctx, roles, [0, 1, 2]), rec.base)
    torch.testing.assert_close(out[:, 0, 0], expected_rows([0, 1, 2], lambda l, val: 0.0 if l != 1 else val + 1000))
    assert not any(c[0] == "early" for c in rec.calls)


def test_begin_step_without_sample_sigmas_counts_as_the_only_step():
    m = Method("m", Schedule(0.0, 0.5))
    ctx = Router().with_method(m).begin_step(4.0, None, 3.0)
    assert (ctx.step, ctx.steps, ctx.sigma, ctx.cfg) == (0, 1, 4.0, 3.0)
    assert ctx.active == {"m"}


def test_sigma_window_schedule():
    m = Method("m", Schedule(sigma_max=5.0, sigma_min=2.0))
    router = Router().with_method(m)
    assert [bool(router.begin_step(s, SIGMAS, 1.0).active) for s in (10.0, 5.0, 3.0, 2.0, 1.0)] == \
        [False, True, True, True, False]


# --- extra cond rows ------------------------------------------------------------------------------------

def test_extend_main_batch():
    extra = Method("pag", extra_cond_rows=True)
    plain = Method("sag")
    late = Method("late", Schedule(0.5, 1.0), extra_cond_rows=True)
    router = router_with(extra, plain, late)
    ctx = router.begin_step(10.0, SIGMAS, 7.0)                   # step 0: late is off
    assert ctx.active == {"pag", "sag"}
    assert router.extend_main_batch(ctx, ["c", "u"]) == (["c", "u", "c"], [COND, UNCOND, "pag"])
    # other conds entries (e.g. a third cond of another node) keep their place and get no role
    assert router.extend_main_batch(ctx, ["c", "u", "x"]) == (["c", "u", "x", "c"], [COND, UNCOND, None, "pag"])
    # no CFG: uncond is None, the copy is still of cond
    assert router.extend_main_batch(ctx, ["c", None]) == (["c", None, "c"], [COND, UNCOND, "pag"])
    # no cond: nothing to copy
    assert router.extend_main_batch(ctx, [None, "u"]) == ([None, "u"], [COND, UNCOND])
    # step 2: late is on and gets its own copy, after pag's (install order)
    ctx = router.begin_step(2.0, SIGMAS, 7.0)
    assert ctx.active == {"pag", "sag", "late"}
    assert router.extend_main_batch(ctx, ["c", "u"]) == (["c", "u", "c", "c"], [COND, UNCOND, "pag", "late"])


# --- pass-through cases ----------------------------------------------------------------------------------

def _single_hook_router(rec):
    hook = AttentionHook(frozenset({MID}), lambda ctx: {COND, UNCOND}, rec.hook("h", lambda q, k, v, nxt: v * 0))
    return router_with(Method("h", hooks=(hook,)))


@pytest.mark.parametrize("case", ["other_layer", "no_step", "no_roles", "no_labels", "rows_not_divisible",
                                  "label_without_role", "extra_call"])
def test_base_for_everything_else(case):
    rec = Recorder()
    router = _single_hook_router(rec)
    ctx = router.begin_step(10.0, SIGMAS, 7.0)
    labels, roles, layer = [0, 1], [COND, UNCOND], MID
    q, k, v = batch(labels)
    opts = options(ctx, roles, labels)
    if case == "other_layer":
        layer = D4
    elif case == "no_step":
        del opts[STEP_KEY]
    elif case == "no_roles":
        del opts[ROLES_KEY]
    elif case == "no_labels":
        del opts["cond_or_uncond"]
    elif case == "rows_not_divisible":
        opts["cond_or_uncond"] = [0, 1, 0]
    elif case == "label_without_role":
        opts["cond_or_uncond"] = [2, 3]
    elif case == "extra_call":     # a post-CFG function's own call: no row has a role
        opts[ROLES_KEY] = [None, None]
    out = router.attend(q, k, v, HEADS, layer, opts, rec.base)
    torch.testing.assert_close(out, v + 1000)
    assert [c[0] for c in rec.calls] == ["base"]


def test_router_is_immutable_and_keys_are_unique():
    r1 = Router()
    r2 = r1.with_method(Method("a"))
    assert r1.methods == () and [m.key for m in r2.methods] == ["a"]
    with pytest.raises(ValueError):
        r2.with_method(Method("a"))
    # host option dicts get deep-copied: router and step context must survive as the same objects
    ctx = r2.begin_step(10.0, SIGMAS, 1.0)
    opts = copy.deepcopy({"r": r2, STEP_KEY: ctx})
    assert opts["r"] is r2 and opts[STEP_KEY] is ctx


def test_methods_add_rows_of_their_own_conds_only_when_active():
    from attnguide.attention.step_window import Schedule
    seen = []

    def rows(ctx, conds):
        seen.append(list(conds))
        return [("sega.0.a", "concept a"), ("sega.0.b", "concept b")]

    pag = Method("pag.0", extra_cond_rows=True)
    sega = Method("sega.0", schedule=Schedule(0.5, 1.0), extra_rows=rows)
    router = router_with(pag, sega)
    ctx = router.begin_step(SIGMAS[0], SIGMAS, 7.0)         # step 0: SEGA's window has not started
    conds, roles = router.extend_main_batch(ctx, ["c", "u"])
    assert conds == ["c", "u", "c"] and roles == [COND, UNCOND, "pag.0"] and seen == []
    ctx = router.begin_step(SIGMAS[-2], SIGMAS, 7.0)        # last step
    conds, roles = router.extend_main_batch(ctx, ["c", "u"])
    assert conds == ["c", "u", "c", "concept a", "concept b"]
    assert roles == [COND, UNCOND, "pag.0", "sega.0.a", "sega.0.b"] and seen == [["c", "u"]]
