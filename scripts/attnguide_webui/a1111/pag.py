"""Perturbed-Attention Guidance on plain A1111 (nodes/pag.py's composition): the perturbed rows run in
the same UNet call as cond/uncond."""
from ....attention.math import identity_attention
from ....attention.router import AttentionHook, Method
from ....attention.step_window import Schedule
from ....guidance.pag import pag_guidance, pag_scale
from ....guidance.rescale import rescale_denoised
from .params import layers_of


def install(session, scale, adaptive_scale, layers, rescale, start_percent, end_percent):
    selected = layers_of(session, layers, "layers", "Perturbed-Attention Guidance (AttnGuide)")
    if scale == 0:
        return
    key = session.method_key("pag")

    def perturb(q, k, v, heads, ctx, options, next):
        return identity_attention(q, k, v, heads)

    def post(step):
        perturbed = step.block(key)
        if perturbed is None:
            return step.denoised
        s = pag_scale(scale, adaptive_scale, step.timestep) if adaptive_scale > 0 else scale
        out = pag_guidance(step.denoised, step.cond_denoised, perturbed, s)
        if rescale > 0 and step.ctx.cfg > 1:
            out = rescale_denoised(step.x, step.sigma, out, step.cond_denoised, rescale)
        return out

    session.add(Method(key, Schedule(start_percent, end_percent), (AttentionHook(frozenset(selected), lambda ctx: {key}, perturb),),
                       extra_cond_rows=True), post)
