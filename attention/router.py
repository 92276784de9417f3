"""One router per patched model: several methods hook the same attention layer in the
same forward, each on the batch rows it asked for.

The host adapter gives the router three things per sampler step:
  begin_step        -> a StepContext (which methods are on, what they captured)
  extend_main_batch -> the main model call's conds plus the extra rows methods want,
                       and the role of every conds entry ("cond", "uncond", a method key)
  attend            -> called for a hooked self-attention with the host's kernel as
                       `base(q, k, v, labels)`; hooks see only the rows whose role they
                       asked for, and base and the hooks are told which chunks
                       (options["cond_or_uncond"] labels) the rows they get belong to.
Everything here is host-free; the per-step state travels in the host's per-call
options dict under STEP_KEY / ROLES_KEY.
"""
from dataclasses import dataclass, field
from typing import Callable

import torch

from .layers import forward_order
from .step_window import Schedule, step_index

ROUTER_KEY = "attnguide_router"
STEP_KEY = "attnguide_step"
ROLES_KEY = "attnguide_roles"
RUN_KEY = "attnguide_run"
COND, UNCOND = "cond", "uncond"


class StepContext:
    """State of one model evaluation of the sampler (one step, or one stage of it)."""

    def __init__(self, step, steps, sigma, cfg):
        self.step, self.steps, self.sigma, self.cfg = step, steps, sigma, cfg
        self.active = set()
        self.main_done = False
        self.captures = {}
        self.extra_outputs = {}
        self.attn1_at = None
        self.block_at = None     # a DiT block's attention.dit_blocks.BlockCall while that block runs
        self.sampler_conds = {}  # the sampler's conds by name (host objects), for methods' extra rows
        self.run = None          # state of the whole generation this step belongs to (a dict), if the host keeps one

    def __deepcopy__(self, memo):
        return self  # host option dicts get copied; the step's state must stay one object


@dataclass(frozen=True)
class AttentionHook:
    """fn(q, k, v, heads, ctx, options, next) -> out, on the rows of roles(ctx)."""
    layers: frozenset
    roles: Callable
    fn: Callable


@dataclass(frozen=True)
class Method:
    key: str
    schedule: Schedule = Schedule()
    hooks: tuple = ()
    extra_cond_rows: bool = False  # one more copy of the conditional rows, owned by this method
    extra_rows: Callable = None    # (ctx, conds) -> [(role, cond)]: rows of its own conds in the main call


@dataclass(frozen=True)
class Router:
    methods: tuple = ()
    _by_layer: dict = field(default_factory=dict, compare=False)

    def __deepcopy__(self, memo):
        return self  # immutable: adding a method makes a new router

    def with_method(self, method):
        if any(m.key == method.key for m in self.methods):
            raise ValueError(f"method key {method.key!r} is already installed")
        methods = self.methods + (method,)
        by_layer = {}
        for m in methods:
            for hook in m.hooks:
                for layer in hook.layers:
                    by_layer.setdefault(layer, []).append((m.key, hook))
        return Router(methods, by_layer)

    @property
    def layers(self):
        return set(self._by_layer)

    def begin_step(self, sigma, sample_sigmas, cfg):
        sigma = float(sigma.flatten()[0]) if isinstance(sigma, torch.Tensor) else float(sigma)
        step, steps = step_index(sample_sigmas, sigma) if sample_sigmas is not None else (0, 1)
        return self.begin_step_at(step, steps, sigma, cfg)

    def begin_step_at(self, step, steps, sigma, cfg):
        """begin_step for hosts that count the steps themselves (A1111's CFGDenoiser)."""
        ctx = StepContext(step, steps, float(sigma), cfg)
        ctx.active = {m.key for m in self.methods if m.schedule.active(step, steps, sigma)}
        return ctx

    def extend_main_batch(self, ctx, conds):
        """conds = [cond, uncond, *others] of the step's main model call."""
        roles = [COND, UNCOND] + [None] * (len(conds) - 2)
        extra = []
        for m in self.methods:
            if m.key not in ctx.active:
                continue
            if m.extra_cond_rows and conds[0] is not None:
                extra.append(conds[0])
                roles.append(m.key)
            if m.extra_rows is not None:
                for role, cond in m.extra_rows(ctx, conds):
                    extra.append(cond)
                    roles.append(role)
        return list(conds) + extra, roles

    def chain(self, layer, role, ctx):
        """The hooks that run, in order, on rows of `role` at `layer` in this step."""
        return tuple(h for key, h in self._by_layer.get(layer, ()) if key in ctx.active and role in h.roles(ctx))

    def copy_diverges_at(self, ctx, role, source=COND):
        """The first layer, in forward order, where rows of `role` that start as copies of
        `source` rows stop computing what those compute; None if they never do."""
        for layer in sorted(self._by_layer, key=forward_order):
            if self.chain(layer, role, ctx) != self.chain(layer, source, ctx):
                return layer
        return None

    def attend(self, q, k, v, heads, layer, options, base):
        hooks = self._by_layer.get(layer)
        ctx, roles = options.get(STEP_KEY), options.get(ROLES_KEY)
        labels = options.get("cond_or_uncond")
        if not hooks or ctx is None or roles is None or not labels or q.shape[0] % len(labels):
            return base(q, k, v, labels)
        rows = q.shape[0] // len(labels)
        chains = [self.chain(layer, roles[label] if label < len(roles) else None, ctx) for label in labels]
        if not any(chains):
            return base(q, k, v, labels)
        outs, start = [], 0
        while start < len(chains):
            end = start + 1
            while end < len(chains) and chains[end] == chains[start]:
                end += 1
            s, group = slice(start * rows, end * rows), labels[start:end]
            part = lambda q, k, v, group=group: base(q, k, v, group)
            seen = options if end - start == len(labels) else {**options, "cond_or_uncond": group}
            outs.append(_run(chains[start], q[s], k[s], v[s], heads, ctx, seen, part))
            start = end
        return torch.cat(outs) if len(outs) > 1 else outs[0]


def _run(chain, q, k, v, heads, ctx, options, base):
    """base here takes (q, k, v): the group's labels are already bound."""
    if not chain:
        return base(q, k, v)
    return chain[0].fn(q, k, v, heads, ctx, options,
                       lambda q, k, v: _run(chain[1:], q, k, v, heads, ctx, options, base))


def method_key(model_options, name):
    """A key for the next method installed on the router in these (patcher) model options."""
    router = model_options.get("transformer_options", {}).get(ROUTER_KEY)
    return f"{name}.{len(router.methods) if router else 0}"


def warn_once(ctx, message, log):
    """log.warning(message) once per generation (every time where the host keeps no run state)."""
    seen = ctx.run.setdefault("warned", set()) if ctx.run is not None else set()
    if message not in seen:
        seen.add(message)
        log.warning(message)


def step_context(model_options):
    """The StepContext of the model evaluation these options belong to (None outside one)."""
    return model_options.get("transformer_options", {}).get(STEP_KEY)
