"""Shared-prefix execution in ComfyUI: rows that copy the conditional rows (PAG's perturbed
rows) skip the UNet's work before the first layer where they are treated differently.

A DIFFUSION_MODEL wrapper (composable, unlike the model_function_wrapper slot) takes a
main-call batch that holds such copies, runs the UNet's forward on the other rows, and
arms, for that call only, forward pre-hooks on the modules from the split point on:
  - the SpatialTransformer holding the split layer gathers the full batch (copies take
    their source's rows) for its input and context, and sets the chunk labels back to the
    call's, so every later hook and patch sees the whole batch;
  - later ResBlocks and SpatialTransformers get the timestep embedding and context
    gathered the same way;
  - an output_block_patch, first in the list, gathers a skip activation saved before the
    split when the output blocks read it.
ControlNet residuals arrive for the whole batch; the ones added before the split (or to a
skip saved before it) are narrowed to the shared rows. The hooks are removed, by their
handles, when the call returns or fails.
"""
import logging

import comfy.ldm.modules.attention as host_attention
import comfy.ldm.modules.diffusionmodules.openaimodel as host_unet
import comfy.patcher_extension
import torch

from ..attention.layers import DIT_KINDS, is_unet
from ..attention.router import ROLES_KEY, ROUTER_KEY, STEP_KEY
from ..attention.shared_prefix import plan

WRAPPER_KEY = "attnguide"
HAS_WRAPPER = hasattr(comfy.patcher_extension.WrappersMP, "DIFFUSION_MODEL")
_LOG = logging.getLogger("attnguide")
if not HAS_WRAPPER:
    _LOG.info("attnguide: this ComfyUI has no diffusion-model wrappers; PAG's perturbed rows run the whole UNet "
              "(no shared prefix)")


def install(model):
    """Add the wrapper to ModelPatcher `model` (a clone); once per router."""
    if HAS_WRAPPER:
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, SharedPrefix())


class SharedPrefix:
    def __init__(self):
        self.reported = set()

    def __deepcopy__(self, memo):
        return self

    def __call__(self, executor, *args, **kwargs):
        if not is_unet(executor.class_obj):  # other models' forwards have other signatures (Flux, Qwen-Image, ...)
            return executor(*args, **kwargs)
        return self._unet_call(executor, *args, **kwargs)

    def _unet_call(self, executor, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs):
        to = transformer_options
        unet = executor.class_obj
        p = self._plan(unet, x, to, kwargs)
        if p is None:
            return executor(x, timesteps, context, y, control, to, **kwargs)
        labels, uuids = list(to["cond_or_uncond"]), list(to["uuids"])
        rows = x.shape[0] // len(labels)
        prefix_rows = _rows(p.prefix, rows, x.device)
        state = _Split(_rows(p.gather, rows, x.device), len(prefix_rows), x.shape[0], labels, uuids)
        split_module, suffix = _modules_from(unet, p.split)
        patches = to.get("patches", {})
        inner = {**to, "cond_or_uncond": [labels[i] for i in p.prefix], "uuids": [uuids[i] for i in p.prefix],
                 "patches": {**patches, "output_block_patch": [state.gather_skip] + list(patches.get("output_block_patch", []))}}
        handles = []
        try:
            handles.append(split_module.register_forward_pre_hook(state.split, with_kwargs=True))
            for module in suffix:
                if isinstance(module, host_unet.ResBlock):
                    handles.append(module.register_forward_pre_hook(state.gather_emb, with_kwargs=True))
                elif isinstance(module, host_attention.SpatialTransformer):
                    handles.append(module.register_forward_pre_hook(state.gather_context, with_kwargs=True))
            take = lambda t: t[prefix_rows] if torch.is_tensor(t) and t.shape[0] == x.shape[0] else t
            return executor(x[prefix_rows], take(timesteps), take(context), take(y),
                            _narrow_control(control, p.split, len(unet.input_blocks), take), inner, **kwargs)
        finally:
            for handle in handles:
                handle.remove()

    def _plan(self, unet, x, to, kwargs):
        router, ctx, roles = to.get(ROUTER_KEY), to.get(STEP_KEY), to.get(ROLES_KEY)
        labels = to.get("cond_or_uncond")
        if router is None or ctx is None or roles is None or not labels or x.shape[0] % len(labels):
            return None
        p = plan(router, ctx, roles, labels, to.get("uuids"))
        if p is None or p.split.kind in DIT_KINDS:  # DiTs share theirs in comfyui/dit.py
            return None
        reason = _unsupported(unet, p.split, to, kwargs)
        if reason is not None:
            if reason not in self.reported:
                self.reported.add(reason)
                _LOG.info("attnguide: %s; the perturbed rows run the whole UNet (no shared prefix)", reason)
            return None
        return p


def _rows(chunks, rows, device):
    return torch.cat([torch.arange(c * rows, (c + 1) * rows) for c in chunks]).to(device)


def _blocks(unet):
    return ([("input", i, b) for i, b in enumerate(unet.input_blocks)] + [("middle", 0, unet.middle_block)]
            + [("output", i, b) for i, b in enumerate(unet.output_blocks)])


def _modules_from(unet, layer):
    """The SpatialTransformer holding `layer`, and the block children that run after it."""
    split, suffix = None, []
    for kind, index, block in _blocks(unet):
        for module in block:
            if split is not None:
                suffix.append(module)
            elif (kind, index) == (layer.kind, layer.block) and len(getattr(module, "transformer_blocks", ())) > layer.depth:
                split = module
    return split, suffix


def _unsupported(unet, layer, to, kwargs):
    """Why this call cannot share its prefix, or None."""
    if not is_unet(unet) or unet.middle_block is None:
        return f"{type(unet).__name__} is not the UNet this split knows"
    if any(kwargs.get(k) is not None for k in ("time_context", "image_only_indicator")):
        return "video UNet inputs"
    if "forward_timestep_embed_patch" in to.get("patches", {}):
        return "a forward_timestep_embed_patch is installed (its layers would get the shared rows' embedding)"
    split, suffix = _modules_from(unet, layer)
    if not isinstance(split, host_attention.SpatialTransformer) or type(split) is not host_attention.SpatialTransformer:
        return f"layer {layer} is not in a plain SpatialTransformer"
    for module in suffix:
        if isinstance(module, (host_unet.VideoResBlock, host_attention.SpatialVideoTransformer)) \
                or (isinstance(module, host_unet.TimestepBlock) and not isinstance(module, host_unet.ResBlock)):
            return f"the UNet has a {type(module).__name__} after layer {layer}"
    return None


def _narrow_control(control, split, n_input_blocks, take):
    """ControlNet residuals (whole batch) narrowed to the shared rows where they are added
    before the split. Lists are consumed from the end: the k-th pop goes to the k-th block;
    the output blocks add theirs to the skip of input block n-1-k."""
    if not isinstance(control, dict):
        return control

    def after_split(name, k):
        if name == "input":
            return split.kind == "input" and k >= split.block
        if name == "middle":
            return split.kind in ("input", "middle")
        return split.kind == "input" and n_input_blocks - 1 - k >= split.block

    out = dict(control)
    for name in ("input", "middle", "output"):
        entries = control.get(name)
        if isinstance(entries, list):
            n = len(entries)
            out[name] = [t if t is None or after_split(name, n - 1 - i) else take(t) for i, t in enumerate(entries)]
    return out


class _Split:
    """Per-call state of the hooks: gather copies' rows from their sources at the split."""

    def __init__(self, gather, shared_rows, all_rows, labels, uuids):
        self.gather, self.shared_rows, self.all_rows = gather, shared_rows, all_rows
        self.labels, self.uuids = labels, uuids
        self.cache = {}

    def _full(self, t):
        """The embedding or context of the shared rows for the whole batch, gathered once per call."""
        if not torch.is_tensor(t) or t.shape[0] != self.shared_rows:
            return t
        hit = self.cache.get(id(t))
        if hit is None or hit[0] is not t:
            hit = self.cache[id(t)] = (t, t[self.gather])
        return hit[1]

    def split(self, module, args, kwargs):
        x, args = args[0], list(args)
        if x.shape[0] != self.shared_rows:
            return None
        args[0] = x[self.gather]
        if len(args) > 1:
            args[1] = self._full(args[1])
        elif "context" in kwargs:
            kwargs = {**kwargs, "context": self._full(kwargs["context"])}
        to = args[2] if len(args) > 2 else kwargs.get("transformer_options")
        if to is not None:
            to["cond_or_uncond"], to["uuids"] = list(self.labels), list(self.uuids)
            if "original_shape" in to:
                to["original_shape"] = [self.all_rows] + list(to["original_shape"][1:])
        return tuple(args), kwargs

    def gather_emb(self, module, args, kwargs):
        return self._gather_second(args, kwargs, "emb")

    def gather_context(self, module, args, kwargs):
        return self._gather_second(args, kwargs, "context")

    def _gather_second(self, args, kwargs, name):
        x = args[0] if args else kwargs.get("x")
        if x is None or x.shape[0] != self.all_rows:
            return None
        if len(args) > 1:
            return (args[0], self._full(args[1]), *args[2:]), kwargs
        if name in kwargs:
            return args, {**kwargs, name: self._full(kwargs[name])}
        return None

    def gather_skip(self, h, hsp, transformer_options):
        # not cached: each skip is read once, and its gathered copy is freed with it
        if h.shape[0] == self.all_rows and hsp.shape[0] == self.shared_rows:
            hsp = hsp[self.gather]
        return h, hsp
