"""Parameters of the Forge backend: the ComfyUI node's execute() inputs, same names and defaults,
checked with the nodes' messages; plus the host values the WebUI script passes (HOST_PARAMS)."""
from ...attention.layers import LayerSelectionError, is_unet, parse_layers, unet_layers
from ...attention.router import ROUTER_KEY

DEFAULTS = {
    "sag": {"scale": 0.75, "blur_sigma": 1.0, "threshold": 1.0, "layer": "m0.0",
            "start_percent": 0.0, "end_percent": 1.0},
    "pag": {"scale": 3.0, "adaptive_scale": 0.0, "layers": "m0", "rescale": 0.0,
            "start_percent": 0.0, "end_percent": 1.0},
    "sega": {"concepts": None, "momentum_scale": 0.1, "momentum_beta": 0.4},
    "attend_excite": {"prompt": "", "words": "", "max_excite_steps": "25", "thresholds": "0: 0.05, 10: 0.5, 20: 0.8",
                      "scale_factor": 20.0, "scale_range_start": 1.0, "scale_range_end": 0.5,
                      "max_refinement_iterations": 20, "smoothing_sigma": 0.5, "attention_downscale": 4,
                      "token_indices": ""},
    "panorama": {"window_width": 0, "window_height": 0, "stride": 64, "wrap": "none", "weights": "uniform",
                 "window_batch": 4},
    "pix2pix_zero": {"source": "cat", "target": "dog", "guidance_amount": 0.1, "lambda_auto_corr": 20.0, "lambda_kl": 20.0,
                     "regularization_steps": 5, "auto_corr_rolls": 5, "seed": 0},
}
CONCEPT_DEFAULTS = {"prompt": "", "direction": "add", "scale": 5.0, "warmup": 10, "cooldown": -1,
                    "timing": "steps", "threshold": 0.9, "weight": 1.0, "conditioning": None}
# Not node inputs: what only the WebUI knows. sigmas: the run's schedule (tensor, or a callable
# returning it when the run starts); encode: texts -> conditioning like sd_model.get_learned_conditioning;
# tokenize: text -> [(position, token id, piece)] of its text tokens (Attend-and-Excite's words).
# init_latent: the img2img init latent (Pix2Pix-Zero inverts it).
HOST_PARAMS = {"sigmas": None, "encode": None, "tokenize": None, "init_latent": None}


def resolve(method, params, defaults=None):
    defaults = DEFAULTS[method] if defaults is None else defaults
    unknown = sorted(set(params) - set(defaults) - set(HOST_PARAMS))
    if unknown:
        raise ValueError(f"{method}: unknown parameter(s) {', '.join(map(repr, unknown))}; "
                         f"the parameters are {', '.join(defaults)} (and {', '.join(HOST_PARAMS)} from the host)")
    return {**HOST_PARAMS, **defaults, **params}


def layers_of(patcher, text, input_name, title):
    diffusion_model = patcher.model.diffusion_model
    if not is_unet(diffusion_model):
        raise ValueError(f"{title}: {type(diffusion_model).__name__} is not a UNet model; this method needs the "
                         "self-attention of a UNet (SD1.x, SD2.x, SDXL).")
    try:
        return parse_layers(text, unet_layers(diffusion_model), input_name)
    except LayerSelectionError as e:
        raise ValueError(str(e)) from None


def method_key(patcher, name):
    router = patcher.model_options.get("transformer_options", {}).get(ROUTER_KEY)
    return f"{name}.{len(router.methods) if router else 0}"
