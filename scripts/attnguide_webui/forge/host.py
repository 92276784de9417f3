"""The few host functions the Forge backend calls, found from the patcher it is given.

Forge (`backend.*`), reForge (`ldm_patched.*` with `modules_forge`) and ComfyUI (`comfy.*`,
the stand-in the tests use for ldm_patched) name them differently:
  attention(q, k, v, heads)         the host's attention kernel (host layout, heads merged)
  calc(model, conds, x, sigma, mo)  one model call for a list of cond lists (None = skipped)
  evaluate(model, x, sigma, uncond, cond, cond_scale, mo, seed)
                                    one guided evaluation after the conditioning modifiers: CFG
                                    and the pre-/post-CFG functions (Forge's
                                    sampling_function_inner, reForge's and ComfyUI's
                                    samplers.sampling_function)
  timestep(model, sigma)            the model's timestep for a sigma (PAG's adaptive scale)
  input_scale(model, sigma)         c_in: the model sees c_in * x (Attend-and-Excite's update)
The host is picked by the module the patcher's class lives in, never by what happens to
be importable, so a process holding two hosts still talks to the right one.
"""
import importlib

import torch

_HOSTS = {"backend": "forge", "modules_forge": "reforge", "ldm_patched": "reforge", "comfy": "comfyui"}


class Host:
    def __init__(self, name):
        self.name = name
        if name == "forge":
            attention = importlib.import_module("backend.attention")
            self._attention = lambda q, k, v, heads: attention.attention_function(q, k, v, heads)
            sampling = importlib.import_module("backend.sampling.sampling_function")
            self._calc = lambda model, conds, x, t, mo: list(sampling.calc_cond_uncond_batch(
                model, conds[0], conds[1] if len(conds) > 1 else None, x, t, mo))
            self._evaluate = sampling.sampling_function_inner
        else:
            root = "ldm_patched" if name == "reforge" else "comfy"
            attention = importlib.import_module(f"{root}.ldm.modules.attention")
            self._attention = lambda q, k, v, heads: attention.optimized_attention(q, k, v, heads)
            samplers = importlib.import_module("ldm_patched.modules.samplers" if name == "reforge" else "comfy.samplers")
            self._calc = lambda model, conds, x, t, mo: list(samplers.calc_cond_batch(model, conds, x, t, mo))
            self._evaluate = samplers.sampling_function  # bound now: the tests' Forge double swaps in its own later

    def attention(self, q, k, v, heads):
        return self._attention(q, k, v, heads)

    def calc(self, model, conds, x, sigma, model_options):
        """Outputs for conds (a list of cond lists; a None entry gives a None output)."""
        out = self._calc(model, list(conds), x, sigma, model_options)
        return [o if c is not None else None for o, c in zip(out, conds)]

    def evaluate(self, model, x, sigma, uncond, cond, cond_scale, model_options, seed):
        """The denoised prediction of one guided evaluation (the conditioning modifiers have run)."""
        return self._evaluate(model, x, sigma, uncond, cond, cond_scale, model_options, seed)

    @staticmethod
    def timestep(model, sigma):
        return _sampling(model).timestep(sigma)

    @staticmethod
    def input_scale(model, sigma):
        """c_in at sigma: the model sees c_in * x."""
        return float(_sampling(model).calculate_input(sigma.float(), torch.ones(1, 1, 1, 1)).flatten()[0])

    def __deepcopy__(self, memo):
        return self


def _sampling(model):
    """ComfyUI/reForge BaseModel.model_sampling or Forge KModel.predictor."""
    sampling = getattr(model, "model_sampling", None)
    return sampling if sampling is not None else model.predictor


def host_of(patcher):
    """The Host of a Forge/reForge/ComfyUI ModelPatcher (by the package its class comes from)."""
    for cls in type(patcher).__mro__:
        name = _HOSTS.get(cls.__module__.split(".")[0])
        if name is not None:
            return Host(name)
    raise TypeError(f"attnguide Forge backend: {type(patcher).__module__}.{type(patcher).__name__} is not a Forge, "
                    "reForge or ComfyUI ModelPatcher; pass p.sd_model.forge_objects.unet")
