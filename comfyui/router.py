"""Installs the pack's attention router on a ComfyUI ModelPatcher clone.

Per sampler step a PREDICT_NOISE wrapper opens a StepContext; a CALC_COND_BATCH
wrapper adds the methods' extra rows to the step's first (main) model call so they
run in the same UNet batch as cond/uncond, and labels every row with its role.
Self-attention reaches the router through the host's attention override (with
attn1 markers telling self- from cross-attention in a UNet; in a DiT, comfyui/dit.py
marks the block whose joint attention runs), or through attn1 replace patches on
hosts without the override. Another pack's attn1 replace on one of our
layers, whenever it was installed, is wrapped for the step so both run: it gets the
rows no hook of ours claims. Everything already there is chained, never dropped.
"""
import logging

import comfy.ldm.modules.attention as host_attention
import comfy.model_patcher
import comfy.patcher_extension
import comfy.sampler_helpers
import comfy.samplers

from ..attention import model_calls
from ..attention.attn1_replace import RoutedAttn1Replace, chain_foreign, with_labels
from ..attention.layers import DIT_KINDS, Layer
from ..attention.router import ROLES_KEY, ROUTER_KEY, RUN_KEY, STEP_KEY, Router
from ..methods.args_step import post_cfg_function
from ..methods.build import Target
from . import common, dit, shared_prefix

WRAPPER_KEY = "attnguide"
OVERRIDE_KEY = "optimized_attention_override"
HAS_OVERRIDE = hasattr(host_attention, "wrap_attn")
_LOG = logging.getLogger("attnguide")
if not HAS_OVERRIDE:
    _LOG.info("attnguide: this ComfyUI has no attention override (added in 0.3.60); using attn1 replace patches")


def install(model, method, force_replace=False):
    """Add `method` (attention.router.Method) to the router of ModelPatcher `model` (a clone)."""
    to = model.model_options.setdefault("transformer_options", {})
    router = to.get(ROUTER_KEY)
    if router is None:
        router = Router()
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, WRAPPER_KEY, _predict_noise)
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, WRAPPER_KEY, _calc_cond_batch)
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _outer_sample)
        shared_prefix.install(model)
    new_layers = {l for h in method.hooks for l in h.layers} - router.layers
    to[ROUTER_KEY] = router.with_method(method)
    for layer in sorted(new_layers):
        _route_layer(model, layer, force_replace)


def install_built(model, built):
    """Install what a method's build gave (methods/build.py) on ModelPatcher `model` (a clone)."""
    install(model, built.method)
    model.set_model_sampler_post_cfg_function(
        post_cfg_function(built.post_cfg, run_extra, common.diffusers_timestep, common.warn_once))


def apply(model, spec, build, params):
    """A clone of `model` with the method `build` (methods/<name>.build) makes from `params`; `model`
    itself where the method does nothing (scale 0) or cannot serve the model (a warning names it)."""
    found = common.attention_layers_or_warn(model, spec.title)
    if found is None:
        return model
    family, layers = found
    m = model.clone()
    built = build(Target(common.method_key(m, spec.key), family, layers), **params)
    if built.method is None:
        return model
    install_built(m, built)
    return m


def add_sampler_conds(model, key, make):
    """Before every run, add conds to the sampler's own: make(conds) -> {name: CONDITIONING}, where
    conds are the run's prompt conds by name. The host processes them with the prompt's (areas,
    model conds, ControlNet), and methods find them as ctx.sampler_conds[name]."""
    def wrapper(executor, *args, **kwargs):
        guider = executor.class_obj
        for name, conditioning in make(guider.conds).items():
            guider.conds[name] = comfy.sampler_helpers.convert_cond(conditioning)
        return executor(*args, **kwargs)

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, f"{WRAPPER_KEY}.{key}", wrapper)


def run_extra(args, conds, x):
    """An extra model call from a post-CFG function; none of the router's hooks touch it."""
    return model_calls.run_extra(comfy.samplers.calc_cond_batch, args, conds, x)


def _outer_sample(executor, *args, **kwargs):
    """One generation: a fresh state that its steps share (the guider's options are a per-run copy)."""
    executor.class_obj.model_options.setdefault("transformer_options", {})[RUN_KEY] = {}
    return executor(*args, **kwargs)


def _predict_noise(executor, x, timestep, model_options={}, seed=None):
    to = model_options.get("transformer_options", {})
    router = to.get(ROUTER_KEY)
    if router is None:
        return executor(x, timestep, model_options, seed)
    ctx = router.begin_step(timestep, to.get("sample_sigmas"), float(getattr(executor.class_obj, "cfg", 1.0)))
    ctx.sampler_conds = getattr(executor.class_obj, "conds", None) or {}
    ctx.run = to.get(RUN_KEY)
    to = chain_foreign({**to, STEP_KEY: ctx}, router, _comfy_kernel)
    return executor(x, timestep, {**model_options, "transformer_options": to}, seed)


def _calc_cond_batch(executor, model, conds, x_in, timestep, model_options):
    to = model_options.get("transformer_options", {})
    ctx, router = to.get(STEP_KEY), to.get(ROUTER_KEY)
    if ctx is None or router is None or ROLES_KEY in to:
        return executor(model, conds, x_in, timestep, model_options)
    if ctx.main_done:
        all_conds, roles = conds, [None] * len(conds)
    else:
        ctx.main_done = True
        all_conds, roles = router.extend_main_batch(ctx, conds)
    out = executor(model, all_conds, x_in, timestep, {**model_options, "transformer_options": {**to, ROLES_KEY: roles}})
    for i in range(len(conds), len(all_conds)):
        ctx.extra_outputs[roles[i]] = out[i]
    return out[:len(conds)]


def _route_layer(model, layer, force_replace):
    to = model.model_options["transformer_options"]
    if layer.kind in DIT_KINDS:
        if not HAS_OVERRIDE:
            raise ValueError("this ComfyUI has no attention override (added in 0.3.59), which the pack needs for "
                             "diffusion transformers; update ComfyUI")
        if not model.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY):
            model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, dit.DitCalls())
        if not isinstance(to.get(OVERRIDE_KEY), _RoutedOverride):
            to[OVERRIDE_KEY] = _RoutedOverride(to.get(OVERRIDE_KEY))
        return
    if force_replace or not HAS_OVERRIDE:
        model.set_model_attn1_replace(RoutedAttn1Replace(layer, None, _comfy_kernel), layer.kind, layer.block, layer.depth)
        return
    override = to.get(OVERRIDE_KEY)
    if not isinstance(override, _RoutedOverride):
        to[OVERRIDE_KEY] = _RoutedOverride(override)
        model.set_model_attn1_patch(_mark_attn1)
        model.set_model_attn1_output_patch(_clear_attn1)


def _comfy_kernel(q, k, v, heads, extra_options):
    return host_attention.optimized_attention(q, k, v, heads, attn_precision=extra_options.get("attn_precision"))


def _mark_attn1(n, context, value, extra_options):
    ctx = extra_options.get(STEP_KEY)
    if ctx is not None:
        ctx.attn1_at = (extra_options.get("block"), extra_options.get("block_index"))
    return n, context, value


def _clear_attn1(n, extra_options):
    ctx = extra_options.get(STEP_KEY)
    if ctx is not None:
        ctx.attn1_at = None
    return n


class _RoutedOverride:
    """optimized_attention_override: routes marked self-attention, passes the rest on."""

    def __init__(self, previous):
        self.previous = previous

    def __deepcopy__(self, memo):
        return self

    def __call__(self, func, *args, **kwargs):
        nxt = func if self.previous is None else (lambda *a, **kw: self.previous(func, *a, **kw))
        to = kwargs.get("transformer_options") or {}
        ctx = to.get(STEP_KEY)
        if ctx is not None and ctx.block_at is not None:
            return dit.route(ctx, nxt, args, kwargs)
        if ctx is None or ctx.attn1_at is None or len(args) != 4 or kwargs.get("mask") is not None \
                or kwargs.get("skip_reshape") or kwargs.get("skip_output_reshape"):
            return nxt(*args, **kwargs)
        at, ctx.attn1_at = ctx.attn1_at, None
        block, depth = to.get("block"), to.get("block_index")
        if at != (block, depth) or block is None:
            return nxt(*args, **kwargs)
        q, k, v, heads = args
        base = lambda q, k, v, labels: nxt(q, k, v, heads, **{**kwargs, "transformer_options": with_labels(to, labels)})
        return to[ROUTER_KEY].attend(q, k, v, heads, Layer(block[0], block[1], depth), to, base)
