"""Parameters of the Forge backend: the ComfyUI node's execute() inputs, names and defaults from methods/,
checked with the nodes' messages; plus the host values the WebUI script passes (HOST_PARAMS)."""
from ....attention.router import method_key as router_key
from ....methods import METHODS
from ..unet_layers import build_on, unet_target
from .router import install_built


def _defaults(params):
    return {p.name: p.default for p in params}


# keyed like the node's execute(): SEGA's concepts and Attend-and-Excite's prompt come from the script
DEFAULTS = {key: _defaults(spec.params) for key, spec in METHODS.items()}
DEFAULTS["sega"] = {"concepts": None, **DEFAULTS["sega"]}
DEFAULTS["attend_excite"] = {"prompt": "", **DEFAULTS["attend_excite"]}
CONCEPT_DEFAULTS = {**_defaults(METHODS["sega"].concept_params), "conditioning": None}

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


def method_key(patcher, name):
    return router_key(patcher.model_options, name)


def apply_built(patcher, spec, build, params, sigmas=None):
    """A clone of `patcher` with what `build` (methods/<name>.build) makes from the method's params."""
    m = patcher.clone()
    built = build_on(unet_target(method_key(m, spec.key), patcher.model.diffusion_model, spec.title), spec, build, params)
    if built.method is not None:
        install_built(m, built, sigmas)
    return m
