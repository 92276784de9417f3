"""Self-Attention Guidance on a Forge/reForge patcher (the ComfyUI node's behaviour, nodes/sag.py)."""
from ....attention.step_window import Schedule
from ....methods.sag import auto_layer, sag_layer, sag_method
from .params import layers_of, method_key
from .router import install, run_extra


def apply_sag(patcher, scale, blur_sigma, threshold, layer, start_percent, end_percent, sigmas=None, **_host):
    selected = sag_layer(layers_of(patcher, layer, "layer", "Self-Attention Guidance", auto_layer("unet", ())), layer)
    schedule = Schedule(start_percent, end_percent)
    m = patcher.clone()
    if scale == 0:
        return m
    method, post_cfg = sag_method(method_key(m, "sag"), selected, schedule, scale, blur_sigma, threshold, run_extra)
    install(m, method, sigmas)
    m.set_model_sampler_post_cfg_function(post_cfg)
    return m
