"""Self-Attention Guidance on plain A1111: an attention.router Method on the pass's Session whose
guidance is fn(StepData) -> denoised, composed from guidance/ and attention/ as nodes/sag.py composes it."""
import torch

from ....attention.math import attention_with_key_mass
from ....attention.router import COND, UNCOND, AttentionHook, Method
from ....attention.step_window import Schedule
from ....guidance import sag
from ....methods.sag import auto_layer
from .params import layers_of


def install(session, scale, blur_sigma, threshold, layer, start_percent, end_percent):
    title = "Self-Attention Guidance (AttnGuide)"
    selected = layers_of(session, layer, "layer", title, auto_layer("unet", ()))
    if len(selected) != 1:
        raise ValueError(f"{title}: layer: SAG reads one layer, '{layer}' selects {len(selected)} "
                         f"({', '.join(map(str, selected))}). Name one, e.g. '{selected[0]}'.")
    if scale == 0:
        return
    key = session.method_key("sag")
    branch = lambda ctx: {UNCOND} if ctx.cfg > 1 else {COND}

    def capture(q, k, v, heads, ctx, options, next):
        out, mass = attention_with_key_mass(q, k, v, heads)
        rows = ctx.captures.setdefault(key, {})
        for label, row in zip(options["cond_or_uncond"], mass):
            rows[label] = row
        return out

    def post(step):
        which = UNCOND if step.ctx.cfg > 1 else COND
        captured = step.ctx.captures.get(key, {})
        rows = step.branch_rows(which)
        if any(r not in captured for r in rows):
            return step.denoised
        mass = torch.stack([captured[r] for r in rows])
        pred = step.uncond_denoised if which == UNCOND else step.first_cond_denoised()
        x = step.x
        latent_hw = tuple(x.shape[-2:])
        mask = sag.attention_mask(mass, sag.grid_shape(mass.shape[1], latent_hw), latent_hw, threshold)
        degraded = sag.degrade(pred, mask.to(pred.dtype), blur_sigma)
        degraded_pred = step.run_extra(which, sag.degraded_input(x, pred, degraded))
        return sag.sag_guidance(step.denoised, degraded, degraded_pred, scale)

    session.add(Method(key, Schedule(start_percent, end_percent), (AttentionHook(frozenset(selected), branch, capture),)),
                post)
