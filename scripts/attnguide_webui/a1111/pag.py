"""Perturbed-Attention Guidance on plain A1111 (nodes/pag.py's composition): the perturbed rows run in
the same UNet call as cond/uncond."""
from ....guidance.pag import pag_guidance, pag_scale
from ....guidance.rescale import rescale_denoised
from ....methods.pag import AUTO_LAYERS, pag_method
from .params import layers_of


def install(session, scale, adaptive_scale, layers, rescale, start_percent, end_percent):
    selected = layers_of(session, layers, "layers", "Perturbed-Attention Guidance (AttnGuide)", AUTO_LAYERS["unet"])
    if scale == 0:
        return
    key = session.method_key("pag")

    def post(step):
        perturbed = step.block(key)
        if perturbed is None:
            return step.denoised
        s = pag_scale(scale, adaptive_scale, step.timestep) if adaptive_scale > 0 else scale
        out = pag_guidance(step.denoised, step.cond_denoised, perturbed, s)
        if rescale > 0 and step.ctx.cfg > 1:
            out = rescale_denoised(step.x, step.sigma, out, step.cond_denoised, rescale)
        return out

    session.add(pag_method(key, "unet", selected, start_percent, end_percent), post)
