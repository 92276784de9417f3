"""Perturbed-Attention Guidance on a Forge/reForge patcher (the ComfyUI node's behaviour, nodes/pag.py).
The perturbed rows run in the same UNet call as cond/uncond."""
from ....methods.pag import AUTO_LAYERS, pag_method, pag_post_cfg
from .params import layers_of, method_key
from .router import host, install


def apply_pag(patcher, scale, adaptive_scale, layers, rescale, start_percent, end_percent, sigmas=None, **_host):
    selected = layers_of(patcher, layers, "layers", "Perturbed-Attention Guidance", AUTO_LAYERS["unet"])
    m = patcher.clone()
    if scale == 0:
        return m
    key = method_key(m, "pag")
    install(m, pag_method(key, "unet", selected, start_percent, end_percent), sigmas)
    m.set_model_sampler_post_cfg_function(pag_post_cfg(key, scale, adaptive_scale, rescale, _timestep))
    return m


def _timestep(args):
    return host(args["model_options"]).timestep(args["model"], args["sigma"])
