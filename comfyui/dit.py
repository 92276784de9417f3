"""The router in ComfyUI's diffusion transformers (SD3, Flux-family, Qwen-Image).

An APPLY_MODEL wrapper arms, for one model call of the router's model, forward hooks on the
DiT's blocks, removed by their handles when the call returns or fails:
  - on every block with a routed layer: the pre-hook records which block runs, how many text
    tokens lead its joint sequence and the image token grid (ctx.block_at); the attention
    override routes the block's first attention call (its joint attention) and clears it;
  - shared prefix: on every block before the first layer where copies of the conditional rows
    (PAG's perturbed rows) compute differently, the block runs on the other rows only and its
    outputs are gathered back for the whole batch, each copy taking its source's rows.
The model's modules are never changed outside the call.
"""
import dataclasses
import math

import torch

from ..attention.attn1_replace import with_labels
from ..attention.dit_blocks import BLOCK_KEY, BlockCall, dit_blocks, dit_family, text_tokens
from ..attention.layers import DIT_KINDS, forward_order
from ..attention.router import ROLES_KEY, ROUTER_KEY, STEP_KEY
from ..attention.shared_prefix import plan


class DitCalls:
    """The APPLY_MODEL wrapper (one per router)."""

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        to = transformer_options
        router, ctx = to.get(ROUTER_KEY), to.get(STEP_KEY)
        diffusion_model = getattr(executor.class_obj, "diffusion_model", None)
        family = dit_family(diffusion_model) if router is not None and ctx is not None else None
        if family is None:
            return executor(x, t, c_concat, c_crossattn, control, to, **kwargs)
        blocks = dit_blocks(diffusion_model, family)
        grid = tuple(math.ceil(n / family.patch) for n in x.shape[-2:])
        call = _Call(ctx, family, grid)
        handles = []
        try:
            routed = {layer for layer in router.layers if layer.kind in DIT_KINDS}
            for layer, block in blocks:
                if layer in routed:
                    handles.append(block.register_forward_pre_hook(call.enter(layer), with_kwargs=True))
                    handles.append(block.register_forward_hook(call.leave))
            joint = [(layer, block) for layer, block in blocks if layer.kind == "joint"]
            if joint and joint[-1][0] not in routed and any(layer.kind == "single" for layer in routed):
                # single blocks get [text, image] in one stream: the last joint block tells the text's length
                handles.append(joint[-1][1].register_forward_pre_hook(call.see_text, with_kwargs=True))
            split = _split(router, ctx, to, x)
            if split is not None:
                layer, rows, gather, prefix = split
                narrow = _narrow(rows, x.shape[0], {**to, "cond_or_uncond": [to["cond_or_uncond"][i] for i in prefix],
                                                    "uuids": [to["uuids"][i] for i in prefix]})
                for prefix_layer, block in blocks:
                    if forward_order(prefix_layer) >= forward_order(layer):
                        break
                    handles.append(block.register_forward_pre_hook(narrow, with_kwargs=True))
                    handles.append(block.register_forward_hook(_widen(gather, len(rows))))
            return executor(x, t, c_concat, c_crossattn, control, to, **kwargs)
        finally:
            ctx.block_at = None
            for handle in handles:
                handle.remove()


class _Call:
    def __init__(self, ctx, family, grid):
        self.ctx, self.family, self.grid = ctx, family, grid
        self.text_tokens = 0

    def see_text(self, module, args, kwargs):
        self.text_tokens = text_tokens(self.family, args, kwargs) or self.text_tokens

    def enter(self, layer):
        def pre_hook(module, args, kwargs):
            if layer.kind == "joint":
                self.see_text(module, args, kwargs)
            self.ctx.block_at = BlockCall(layer, self.text_tokens, self.grid)
        return pre_hook

    def leave(self, module, args, output):
        self.ctx.block_at = None


def _split(router, ctx, to, x):
    """(first diverging layer, the rows the shared blocks run, for every row the position of the
    row it takes there, the chunks the shared blocks run) for a call holding copies of the
    conditional rows; None otherwise."""
    roles, labels = to.get(ROLES_KEY), to.get("cond_or_uncond")
    if roles is None or not labels or x.shape[0] % len(labels):
        return None
    p = plan(router, ctx, roles, labels, to.get("uuids"))
    if p is None or p.split.kind not in DIT_KINDS:
        return None
    n = x.shape[0] // len(labels)
    rows = torch.cat([torch.arange(c * n, (c + 1) * n) for c in p.prefix]).to(x.device)
    gather = torch.cat([torch.arange(g * n, (g + 1) * n) for g in p.gather]).to(x.device)
    return p.split, rows, gather, p.prefix


def _narrow(rows, all_rows, options):
    """The block runs the shared rows only; the hooks inside it see their chunk labels (options)."""
    take = lambda t: t[rows] if t.ndim > 0 and t.shape[0] == all_rows else t

    def pre_hook(module, args, kwargs):
        kwargs = {k: _each_tensor(take, v) for k, v in kwargs.items()}
        if isinstance(kwargs.get("transformer_options"), dict):
            kwargs["transformer_options"] = options
        return tuple(_each_tensor(take, a) for a in args), kwargs
    return pre_hook


def _widen(gather, shared_rows):
    full = lambda t: t[gather] if t.ndim > 0 and t.shape[0] == shared_rows else t
    return lambda module, args, output: _each_tensor(full, output)


def _each_tensor(fn, value):
    """value with fn applied to every tensor in it: tensors, tuples and lists of them, and dataclasses
    of them (Chroma hands its blocks their modulations as ModulationOut dataclasses)."""
    if torch.is_tensor(value):
        return fn(value)
    if isinstance(value, (tuple, list)):
        items = [_each_tensor(fn, v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _each_tensor(fn, getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    return value


def route(ctx, nxt, args, kwargs):
    """The attention override's path for a DiT block's joint attention (ctx.block_at set)."""
    at, ctx.block_at = ctx.block_at, None
    to = kwargs.get("transformer_options") or {}
    q, k, v = args[:3]
    heads = args[3] if len(args) > 3 else kwargs.get("heads")
    mask = args[4] if len(args) > 4 else kwargs.get("mask")
    if mask is not None and mask.ndim >= 3 and mask.shape[0] > 1:
        return nxt(*args, **kwargs)  # a per-row mask would have to follow the router's row groups
    heads_first = bool(kwargs.get("skip_reshape"))
    if heads_first:  # (B, H, L, D) -> the router's (B, L, H * D)
        q, k, v = (t.transpose(1, 2).flatten(2) for t in (q, k, v))
    else:  # SD3 hands v over as (B, L, H, D)
        q, k, v = (t.flatten(2) if t.ndim == 4 else t for t in (q, k, v))
    rest = {key: value for key, value in kwargs.items()
            if key not in ("heads", "mask", "skip_reshape", "skip_output_reshape", "transformer_options")}

    def base(q, k, v, labels):
        return nxt(q, k, v, heads, mask=mask, transformer_options=with_labels(to, labels), **rest)

    out = to[ROUTER_KEY].attend(q, k, v, heads, at.layer, {**to, BLOCK_KEY: at}, base)
    if kwargs.get("skip_output_reshape"):
        out = out.unflatten(-1, (heads, -1)).transpose(1, 2)
    return out
