"""Installs the pack's attention router (attention/router.py) on a Forge or reForge UnetPatcher clone.

Forge and reForge sample through the A1111 layer, which calls none of ComfyUI's patcher
wrappers (OUTER_SAMPLE, PREDICT_NOISE, CALC_COND_BATCH) and has no attention override, so
this glue uses only what both have had from the start:
  conditioning_modifiers  -> once per model evaluation, before anything runs: opens the
                             StepContext (sigma, cond_scale, the run's schedule) and hands it
                             on in a copy of the evaluation's model_options;
  model_function_wrapper  -> around each UNet call: the step's first call holding the
                             conditional rows gets the methods' extra rows appended (copies of
                             the conditional rows, or those rows with another text); a wrapper
                             that was there before is called inside it;
  attn1 replace patches   -> self-attention of the hooked layers reaches Router.attend; a
                             replace patch that was there (or that another extension sets
                             later, e.g. Forge's set_model_replace_all) is chained, not dropped;
  post-CFG functions      -> the methods' guidance, with run_extra for extra model calls.
With the panorama (panorama.py) each window batch is a whole evaluation of its own: the
methods' modifiers (runs_per_window) run there, not on the full latent (modifier_step).
Nothing is global and nothing touches modules: all of it lives in the clone's model_options.
"""
import logging
import math

import torch

from ....attention import model_calls
from ....attention import router as routing
from ....attention.attn1_replace import RoutedAttn1Replace, chain_foreign
from ....attention.router import COND, ROLES_KEY, ROUTER_KEY, STEP_KEY, UNCOND, Router, step_context
from ....guidance import panorama as pano
from ....methods.args_step import post_cfg_function
from .host import host_of

HOST_KEY = "attnguide_forge_host"
RUNS_KEY = "attnguide_forge_runs"
WINDOW_KEY = "attnguide_forge_window"  # in a panorama window's evaluation: its Window
RESULT_KEY = "attnguide_forge_result"  # after the windows: the blended prediction every UNet call returns
COND_LABEL = 0
_LOG = logging.getLogger("attnguide")


def warn_once(ctx, message):
    routing.warn_once(ctx, message, _LOG)


def host(model_options):
    return model_options["transformer_options"][HOST_KEY]


def schedule_of(model_options):
    """The sigmas of the run in progress (None where neither the host nor the script gave them)."""
    to = model_options.get("transformer_options", {})
    sigmas = to.get("sample_sigmas")
    runs = to.get(RUNS_KEY)
    return sigmas if sigmas is not None or runs is None else runs.schedule


class Window:
    """The window batch a panorama evaluation runs: `group` (guidance.panorama.Window list) of a
    (height, width) latent."""

    def __init__(self, group, height, width):
        self.group, self.height, self.width = group, height, width

    def __deepcopy__(self, memo):
        return self


def runs_per_window(modifier):
    """Whether a conditioning modifier is a method's that the panorama runs in every window."""
    return bool(getattr(getattr(modifier, "__self__", None), "runs_per_window", False))


def _has(router, prefix):
    return router is not None and any(m.key.startswith(prefix) for m in router.methods)


def has_method(patcher, prefix):
    """Whether `patcher`'s router holds a method whose key starts with `prefix` ('panorama.')."""
    return _has(patcher.model_options.get("transformer_options", {}).get(ROUTER_KEY), prefix)


def _panorama_outside_window(model_options):
    to = model_options.get("transformer_options", {})
    return WINDOW_KEY not in to and _has(to.get(ROUTER_KEY), "panorama.")


def modifier_step(model_options, cond, unknown_sigmas):
    """(StepContext, the run's sigmas) for a method's conditioning modifier, or None where it does
    nothing: outside a step, without conditional rows, on the full latent of a panorama (it runs in
    the windows), or without sigmas (then `unknown_sigmas` is logged once per generation)."""
    ctx = step_context(model_options)
    if ctx is None or not cond or _panorama_outside_window(model_options):
        return None
    sigmas = schedule_of(model_options)
    if sigmas is None:
        warn_once(ctx, unknown_sigmas)
        return None
    return ctx, sigmas


def post_cfg_last(model_options, fn):
    """The evaluation's model_options with post-CFG function `fn` moved after every other one
    (also those added after it)."""
    post = [f for f in model_options.get("sampler_post_cfg_function", []) if f != fn]
    return {**model_options, "sampler_post_cfg_function": post + [fn]}


def install(patcher, method, sigmas=None):
    """Add `method` (attention.router.Method) to the router of `patcher` (a clone).
    sigmas: the run's schedule (a tensor/list, or a callable returning one at the start of each
    run), for hosts that do not put "sample_sigmas" in transformer_options (Forge)."""
    mo = patcher.model_options
    to = mo.setdefault("transformer_options", {})
    router = to.get(ROUTER_KEY)
    if router is None:
        router = Router()
        to[HOST_KEY] = host_of(patcher)
        to[RUNS_KEY] = Runs(sigmas)
        mo["conditioning_modifiers"] = list(mo.get("conditioning_modifiers", [])) + [_begin_step]
        previous = mo.get("model_function_wrapper")
        if not isinstance(previous, UnetWrapper):
            mo["model_function_wrapper"] = UnetWrapper(previous)
    elif sigmas is not None:
        to[RUNS_KEY].sigmas = sigmas
    new_layers = {l for h in method.hooks for l in h.layers} - router.layers
    to[ROUTER_KEY] = router.with_method(method)
    for layer in sorted(new_layers):
        replaces = to.get("patches_replace", {}).get("attn1", {})
        key = (layer.kind, layer.block, layer.depth)
        previous = replaces.get(key, replaces.get(key[:2]))
        patcher.set_model_attn1_replace(RoutedAttn1Replace(layer, previous, _host_kernel), layer.kind, layer.block, layer.depth)


def install_built(patcher, built, sigmas=None, **post_cfg_options):
    """Install what a method's build gave (methods/build.py) on `patcher` (a clone)."""
    install(patcher, built.method, sigmas)
    patcher.set_model_sampler_post_cfg_function(post_cfg_function(built.post_cfg, run_extra, _timestep, warn_once),
                                                **post_cfg_options)


def _timestep(args):
    return host(args["model_options"]).timestep(args["model"], args["sigma"])


def run_extra(args, conds, x):
    """An extra model call from a post-CFG function; none of the router's hooks touch it."""
    return model_calls.run_extra(host(args["model_options"]).calc, args, conds, x)


class Runs:
    """The state of the generation in progress. The A1111 layer has no start-of-run hook: a run
    starts at the first evaluation, or when sigma rises or returns to the run's first sigma
    (a sampler's sigmas only fall within a run)."""

    def __init__(self, sigmas):
        self.sigmas = sigmas
        self.state, self.schedule, self.first, self.last = None, None, None, None

    def __deepcopy__(self, memo):
        return self  # clone() deep-copies model_options; the clones of one apply share the run

    def at(self, sigma):
        s = float(sigma.flatten()[0]) if isinstance(sigma, torch.Tensor) else float(sigma)
        if self.state is None or s > self.last * (1 + 1e-6) or s >= self.first * (1 - 1e-6):
            sigmas = self.sigmas() if callable(self.sigmas) else self.sigmas
            self.state, self.first, self.schedule = {}, s, sigmas
        self.last = s
        return self.state


def _begin_step(model, x, timestep, uncond, cond, cond_scale, model_options, seed):
    """Forge/reForge conditioning modifier: opens the evaluation's StepContext."""
    to = model_options.get("transformer_options", {})
    router, runs = to.get(ROUTER_KEY), to.get(RUNS_KEY)
    if router is None or runs is None:
        return model, x, timestep, uncond, cond, cond_scale, model_options, seed
    state = runs.at(timestep)
    sigmas = schedule_of(model_options)
    to = open_step(to, router, timestep, sigmas, cond_scale, state)
    if sigmas is None:
        warn_once(to[STEP_KEY], "attnguide: the sampler's sigmas are unknown (the script passed no 'sigmas'): every "
                                "evaluation counts as step 0 of 1, so step windows, SEGA's warmup and "
                                "Attend-and-Excite's steps do not advance.")
    return model, x, timestep, uncond, cond, cond_scale, {**model_options, "transformer_options": to}, seed


def open_step(to, router, timestep, sigmas, cond_scale, run, **extra):
    """transformer_options `to` with a new StepContext of `router` for an evaluation at `timestep`
    (its per-run state `run`) and `extra` entries; another extension's attn1 patch set after ours
    (e.g. set_model_replace_all) is chained so both run."""
    ctx = router.begin_step(timestep, sigmas, float(cond_scale))
    ctx.run = run
    return chain_foreign({**to, STEP_KEY: ctx, **extra}, router, _host_kernel)


class Rows:
    """Extra rows a method asks for: a copy of the rows of chunk `label`, optionally with
    another text (crossattn (1 or b, tokens, C)) and pooled vector (SDXL 'y')."""

    def __init__(self, label, crossattn=None, vector=None):
        self.label, self.crossattn, self.vector = label, crossattn, vector


class UnetWrapper:
    """model_function_wrapper: the extra rows join the step's first call with the cond rows. In a
    panorama window, per-pixel conditioning (inpainting's concat latent) is cropped to the windows;
    after the windows, every call answers the blended prediction."""

    def __init__(self, previous):
        self.previous = previous

    def __deepcopy__(self, memo):
        return self

    def _call(self, apply_model, args):
        window = args["c"].get("transformer_options", {}).get(WINDOW_KEY)
        if window is not None:
            args = _cropped(args, window)
        if self.previous is not None:
            return self.previous(apply_model, args)
        return apply_model(args["input"], args["timestep"], **args["c"])

    def __call__(self, apply_model, args):
        c = args["c"]
        to = c.get("transformer_options", {})
        if RESULT_KEY in to:
            return torch.cat([to[RESULT_KEY].to(args["input"])] * len(args["cond_or_uncond"]))
        ctx, router = to.get(STEP_KEY), to.get(ROUTER_KEY)
        if ctx is None or router is None or ROLES_KEY in to:
            return self._call(apply_model, args)
        labels = list(args["cond_or_uncond"])
        if ctx.main_done or COND_LABEL not in labels:
            return self._call(apply_model, _with_roles(args, [COND, UNCOND]))
        ctx.main_done = True
        sources = [Rows(COND_LABEL), Rows(1) if 1 in labels else None]
        all_rows, roles = router.extend_main_batch(ctx, sources)
        extra = all_rows[len(sources):]
        if not extra:
            return self._call(apply_model, _with_roles(args, roles))
        total = args["input"].shape[0]
        rows = total // len(labels)
        picks = []
        for spec in extra:
            start = labels.index(spec.label) * rows
            picks.append((slice(start, start + rows), spec))
        out = self._call(apply_model, _extended(args, roles, labels, picks, total))
        for i, role in enumerate(roles[len(sources):]):
            ctx.extra_outputs[role] = out[total + i * rows: total + (i + 1) * rows]
        return out[:total]


def _with_roles(args, roles):
    c = args["c"]
    return {**args, "c": {**c, "transformer_options": {**c["transformer_options"], ROLES_KEY: roles}}}


def _extended(args, roles, labels, picks, total):
    """The call's arguments with one chunk appended per pick, labelled 2, 3, ... (roles index)."""
    def grow(t, text=None):
        if not isinstance(t, torch.Tensor) or t.ndim == 0 or t.shape[0] != total:
            return t
        parts = [t]
        for rows, spec in picks:
            part = t[rows]
            if text == "crossattn" and spec.crossattn is not None:
                part = pano.tile_batch(spec.crossattn.to(t), part.shape[0])  # a window batch repeats the images
            elif text == "y" and spec.vector is not None:
                part = pano.tile_batch(spec.vector.to(t), part.shape[0])
            parts.append(part)
        return _cat_tokens(parts) if text == "crossattn" else torch.cat(parts)

    def grow_nested(obj):
        if isinstance(obj, dict):
            return {k: grow_nested(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(grow_nested(v) for v in obj)
        return grow(obj)

    c = args["c"]
    new_c = {}
    for name, value in c.items():
        if name == "transformer_options":
            continue
        if name == "c_crossattn":
            new_c[name] = grow(value, "crossattn")
        elif name == "y":
            new_c[name] = grow(value, "y")
        elif name == "control":
            new_c[name] = grow_nested(value)
        else:
            new_c[name] = grow(value)
    all_labels = labels + [len(roles) - len(picks) + i for i in range(len(picks))]
    to = {**c["transformer_options"], ROLES_KEY: roles}
    uuids = to.get("uuids")
    if isinstance(uuids, list) and len(uuids) == len(labels):
        to["uuids"] = uuids + [uuids[labels.index(spec.label)] for _, spec in picks]
    new_c["transformer_options"] = relabelled(to, all_labels)
    return {**args, "input": grow(args["input"]), "timestep": grow(args["timestep"]), "c": new_c,
            "cond_or_uncond": all_labels}


def relabelled(to, labels):
    """transformer_options for a call whose chunks are `labels`, with what Forge derives from them."""
    to = {**to, "cond_or_uncond": list(labels)}
    sigmas = to.get("sigmas")
    if isinstance(sigmas, torch.Tensor) and "cond_mark" in to:  # Forge keeps these beside cond_or_uncond
        b = sigmas.shape[0]
        to["cond_mark"] = torch.tensor([float(l) for l in labels for _ in range(b)]).to(sigmas)
        to["cond_indices"] = [i * b + r for i, l in enumerate(labels) if l == COND_LABEL for r in range(b)]
        to["uncond_indices"] = [i * b + r for i, l in enumerate(labels) if l != COND_LABEL for r in range(b)]
    return to


def _cropped(args, window):
    """A window call's arguments with the full-size per-pixel tensors of c cut to its windows."""
    c = args["c"]
    if c.get("control") is not None:
        raise ValueError("Panorama: ControlNet is not cut into windows on Forge/reForge yet; turn ControlNet "
                         "off or the panorama off.")
    n, rows = len(window.group), args["input"].shape[0]
    new_c = {}
    for name, value in c.items():
        if (isinstance(value, torch.Tensor) and value.ndim == 4 and value.shape[0] == rows and rows % n == 0
                and tuple(value.shape[-2:]) == (window.height, window.width)):
            new_c[name] = _crop_chunks(value, window.group, len(args["cond_or_uncond"]))
        else:
            new_c[name] = value
    return {**args, "c": new_c}


def _crop_chunks(value, group, chunks):
    """value: `chunks` label chunks, each the image rows repeated once per window; each chunk cut
    into the windows (window-major), as the window's x is."""
    n = len(group)
    per_chunk = value.shape[0] // chunks
    images = per_chunk // n
    return torch.cat([pano.crop(part[:images], group) for part in value.split(per_chunk)])


def _cat_tokens(parts):
    """Concatenate text of different lengths as the hosts do: each repeated to the common multiple."""
    lengths = {p.shape[1] for p in parts}
    if len(lengths) > 1:
        common = math.lcm(*lengths)
        parts = [p.repeat(1, common // p.shape[1], 1) for p in parts]
    return torch.cat(parts)


def _host_kernel(q, k, v, heads, extra_options):
    return extra_options[HOST_KEY].attention(q, k, v, heads)
