"""MultiDiffusion panorama on a Forge/reForge patcher (guidance.panorama; the ComfyUI node is
comfyui/panorama.py). Every UNet call is split into overlapping windows, evaluated a window batch
at a time, and the windows' predictions are averaged per position.

The A1111 layer gives no hook around a whole model evaluation (ComfyUI's PREDICT_NOISE, where
the node tiles), so the windows are cut inside each UNet call: cond, uncond and the methods'
extra rows are averaged separately and CFG and post-CFG functions then run on the whole
latent. CFG and PAG (without rescale) are linear in the predictions, so this equals the node;
SEGA and PAG's rescale then act on the whole image rather than per window; SAG, which needs one
attention map per image, cannot run with it.
"""
import torch

from ...attention.router import ROUTER_KEY, Method
from ...guidance import panorama as pano
from .forge_params import method_key
from .forge_router import install, relabelled, set_tiler

LATENT_SCALE = 8  # pixels per latent position of the SD1.x/SD2.x/SDXL VAEs


def native_window(patcher):
    """Latent size the model was trained at: 128 for SDXL-type UNets (class-embedding input), else 64."""
    return 128 if getattr(patcher.model.diffusion_model, "num_classes", None) is not None else 64


def forbid_sag(router):
    if router is not None and any(m.key.startswith("sag.") for m in router.methods):
        raise ValueError("Panorama: Self-Attention Guidance cannot run together with the panorama on Forge/reForge "
                         "(it needs one attention map per image; the panorama evaluates windows). Turn one of them off.")
    if router is not None and any(m.key.startswith("excite.") for m in router.methods):
        raise ValueError("Panorama: Attend-and-Excite cannot run together with the panorama on Forge/reForge. "
                         "Turn one of them off.")


def apply_panorama(patcher, window_width, window_height, stride, wrap, weights, window_batch, sigmas=None):
    window, stride, wrap = pano.pixel_settings(window_width, window_height, stride, wrap, weights, window_batch,
                                               LATENT_SCALE, native_window(patcher))
    forbid_sag(patcher.model_options.get("transformer_options", {}).get(ROUTER_KEY))
    m = patcher.clone()
    install(m, Method(method_key(m, "panorama")), sigmas)
    set_tiler(m, Tiler(window, stride, wrap, weights, window_batch))
    return m


class Tiler:
    def __init__(self, window, stride, wrap, weights, batch):
        self.window, self.stride, self.wrap, self.weights, self.batch = window, stride, wrap, weights, batch

    def __deepcopy__(self, memo):
        return self

    def __call__(self, call, args):
        x = args["input"]
        height, width = x.shape[-2:]
        windows = pano.layout(height, width, self.window, self.stride, self.wrap)
        weight = pano.window_weight(windows[0].height, windows[0].width, self.weights)
        c = args["c"]
        if c.get("control") is not None:
            raise ValueError("Panorama: ControlNet is not cut into windows on Forge/reForge yet; turn ControlNet "
                             "off or the panorama off.")
        labels = list(args["cond_or_uncond"])
        blend = pano.Blend(x)
        for i in range(0, len(windows), self.batch):
            group = windows[i:i + self.batch]
            n = len(group)
            window_c = {}
            for name, value in c.items():
                if name == "transformer_options":
                    window_c[name] = relabelled(value, labels * n)
                elif isinstance(value, torch.Tensor) and value.ndim == 4 and tuple(value.shape[-2:]) == (height, width):
                    window_c[name] = pano.crop(value, group)  # concat latents (inpainting models)
                elif isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == x.shape[0]:
                    window_c[name] = value.repeat((n,) + (1,) * (value.ndim - 1))
                else:
                    window_c[name] = value
            window_args = {**args, "input": pano.crop(x, group), "timestep": args["timestep"].repeat(n),
                           "c": window_c, "cond_or_uncond": labels * n}
            blend.add(call(window_args), group, weight)
        return blend.result()
