"""Forge / reForge backend of the WebUI scripts: apply(method, unet_patcher, params) -> a patched clone.

params are the ComfyUI node's execute() inputs (same names, same defaults; see params.py),
plus what only the WebUI knows: "sigmas" (the run's schedule; Forge puts none in the model
options) and, for methods that read text, "encode". The input patcher is never changed.
Use it in Script.process_before_every_sampling:
    unet = backend.apply("pag", p.sd_model.forge_objects.unet, {...})
    p.sd_model.forge_objects.unet = unet
"""
from .params import resolve
from .attend_excite import apply_attend_excite
from .pag import apply_pag
from .panorama import apply_panorama
from .pix2pix_zero import apply_pix2pix_zero
from .sag import apply_sag
from .sega import apply_sega

METHODS = ("sag", "pag", "sega", "attend_excite", "panorama", "pix2pix_zero")


def apply(method, unet_patcher, params=None):
    params = dict(params or {})
    if method == "sag":
        p = resolve("sag", params)
        return apply_sag(unet_patcher, p["scale"], p["blur_sigma"], p["threshold"], p["layer"],
                         p["start_percent"], p["end_percent"], p["sigmas"])
    if method == "pag":
        p = resolve("pag", params)
        return apply_pag(unet_patcher, p["scale"], p["adaptive_scale"], p["layers"], p["rescale"],
                         p["start_percent"], p["end_percent"], p["sigmas"])
    if method == "sega":
        p = resolve("sega", params)
        return apply_sega(unet_patcher, p["concepts"], p["momentum_scale"], p["momentum_beta"], p["encode"], p["sigmas"])
    if method == "panorama":
        p = resolve("panorama", params)
        return apply_panorama(unet_patcher, p["window_width"], p["window_height"], p["stride"], p["wrap"],
                              p["weights"], p["window_batch"], p["sigmas"])
    if method == "attend_excite":
        p = resolve("attend_excite", params)
        return apply_attend_excite(unet_patcher, p["prompt"], p["words"], p["max_excite_steps"], p["thresholds"],
                                   p["scale_factor"], p["scale_range_start"], p["scale_range_end"],
                                   p["max_refinement_iterations"], p["smoothing_sigma"], p["attention_downscale"],
                                   p["token_indices"], p["tokenize"], p["sigmas"])
    if method == "pix2pix_zero":
        p = resolve("pix2pix_zero", params)
        return apply_pix2pix_zero(unet_patcher, p["source"], p["target"], p["guidance_amount"], p["seed"],
                                  p["lambda_auto_corr"], p["lambda_kl"], p["regularization_steps"], p["auto_corr_rolls"],
                                  p["init_latent"], p["encode"], p["sigmas"])
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
