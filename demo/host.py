"""A small sigma-space sampler around the demo model that hooks attention as the host adapters do.

Per step (a DDIM step, i.e. Euler on the DDIM sigmas):
  ctx = router.begin_step(...)                 which methods are on, their captures
  pre_step(host, x, sigma, ctx) -> x           optional latent updates (e.g. Attend-and-Excite)
  router.extend_main_batch(ctx, [cond, uncond]) -> the main call's conds plus methods' rows
  one UNet call over all of them, labelled per chunk ("cond_or_uncond") with their roles,
      the router reaching every self-attention through the UNet's attn1 (see unet.py)
  CFG, then post_cfg(args) -> denoised per method, in order (args as ComfyUI's post-CFG args)
  x <- denoised + (x - denoised) * sigma_next / sigma

A cond is a text context tensor (b, tokens, width), or None (not evaluated, like ComfyUI's
skipped uncond at CFG 1). `Guidance` bundles what one method gives the sampler.
"""
import math
from dataclasses import dataclass

import torch

from . import progress
from ._pack import core
from .unet import ROUTER_KEY

_router = core("attention.router")


@dataclass(frozen=True)
class Guidance:
    """One method as the sampler sees it; every part is optional."""
    method: object = None      # attention.router.Method: hooks, schedule, extra rows in the main call
    post_cfg: object = None    # fn(args) -> denoised
    pre_step: object = None    # fn(host, x, sigma, ctx) -> x


def ddim_sigmas(model, steps):
    """Sigmas of DDIM's evenly spaced timesteps (999 down to 0), then 0."""
    ts = torch.linspace(999, 0, steps).round().long()
    return [float(model.sigmas[t]) for t in ts] + [0.0]


class Host:
    def __init__(self, model, guidances=()):
        self.model = model
        self.guidances = tuple(guidances)
        router = _router.Router()
        for g in self.guidances:
            if g.method is not None:
                router = router.with_method(g.method)
        self.router = router
        self.model_calls = []  # rows of every UNet call

    def call(self, x, sigma, conds, labels, ctx, roles, options=None):
        """One UNet call over len(conds) chunks of x; the denoised prediction of each chunk."""
        b = x.shape[0]
        opts = {ROUTER_KEY: self.router, _router.STEP_KEY: ctx, _router.ROLES_KEY: roles,
                "cond_or_uncond": list(labels), **(options or {})}
        self.model_calls.append(b * len(conds))
        out = self.model.denoise(torch.cat([x] * len(conds)), sigma, torch.cat(conds), opts)
        return list(out.split(b))

    def extra(self, x, sigma, conds, ctx, options=None):
        """An extra call (e.g. SAG's degraded pass): no row has a role, so no hook acts."""
        return self.call(x, sigma, conds, list(range(len(conds))), ctx, [None] * len(conds), options)

    def sample(self, noise, cond, uncond, cfg, steps=20):
        sigmas = ddim_sigmas(self.model, steps)
        x = noise * math.sqrt(1 + sigmas[0] ** 2)  # DDIM's start, x = x0 + sigma * eps
        run = {}  # what methods keep for the whole generation (SEGA's momentum)
        for i in range(steps):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            ctx = self.router.begin_step(sigma, sigmas, cfg)
            ctx.run = run
            ctx.sampler_conds = {"positive": cond, "negative": uncond}
            for g in self.guidances:
                if g.pre_step is not None:
                    x = g.pre_step(self, x, sigma, ctx)
            with torch.no_grad():
                d = self._denoise(x, sigma, cond, uncond, cfg, ctx)
            x = d + (x - d) * (sigma_next / sigma) if sigma_next > 0 else d
            progress.step(i + 1, steps)
        return x

    def _denoise(self, x, sigma, cond, uncond, cfg, ctx):
        conds = [cond, uncond if cfg > 1 else None]
        all_conds, roles = self.router.extend_main_batch(ctx, conds)
        labels = [j for j, c in enumerate(all_conds) if c is not None]
        outs = dict(zip(labels, self.call(x, sigma, [all_conds[j] for j in labels], labels, ctx, roles)))
        ctx.main_done = True
        for j in range(len(conds), len(all_conds)):
            ctx.extra_outputs[roles[j]] = outs[j]
        cond_d, uncond_d = outs[0], outs.get(1)
        denoised = cond_d if uncond_d is None else uncond_d + (cond_d - uncond_d) * cfg
        args = {"input": x, "sigma": sigma, "timestep": float(self.model.timestep(sigma)), "cond": cond,
                "uncond": conds[1], "cond_denoised": cond_d, "uncond_denoised": uncond_d, "denoised": denoised,
                "ctx": ctx, "host": self}
        for g in self.guidances:
            if g.post_cfg is not None:
                args["denoised"] = g.post_cfg(args)
        return args["denoised"]
