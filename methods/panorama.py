"""MultiDiffusion panorama (Bar-Tal et al. 2023, "MultiDiffusion: Fusing Diffusion Paths for Controlled
Image Generation"): its parameters, as diffusers' StableDiffusionPanoramaPipeline names them where it has them."""
from dataclasses import dataclass

from ..guidance.panorama import FEATHERED, UNIFORM, WRAPS, pixel_settings
from .spec import MethodSpec, Param

SPEC = MethodSpec(
    "panorama", "MultiDiffusion Panorama (AttnGuide)", "Panorama", "AttnGuidePanorama", img2img=True, hires="apply",
    params=(
        Param("window_width", "int", 0, "Window width", minimum=0, maximum=16384, step=8,
              tooltip="Window width in pixels. 0 = the model's native size (512 for SD1.x/SD2.x, 1024"
                      " for SDXL, SD3 and Flux-family, 1328 for Qwen-Image). Clipped to the image."),
        Param("window_height", "int", 0, "Window height", minimum=0, maximum=16384, step=8,
              tooltip="Window height in pixels. 0 = the model's native size. Clipped to the image."),
        Param("stride", "int", 64, "Stride", minimum=8, maximum=16384, step=8,
              tooltip="Distance between neighbouring windows in pixels, both axes (64 px = 8 latent "
                      "positions, the reference's value). Smaller = more windows, smoother, slower."),
        Param("wrap", "choice", "none", "Wrap around", choices=tuple(WRAPS),
              tooltip="360-degree wrap-around: 'horizontal' joins the left and right edges "
                      "(equirectangular panoramas), 'vertical' top and bottom, 'both' tiles."),
        Param("weights", "choice", UNIFORM, "Window weights", choices=(UNIFORM, FEATHERED),
              tooltip="How overlapping windows are averaged: 'uniform' as the reference, or "
                      "'feathered' (less weight near a window's borders, softer seams)."),
        Param("window_batch", "int", 4, "Window batch", minimum=1, maximum=256,
              tooltip="Windows evaluated in one model call. Higher is faster until memory runs out; "
                      "the result does not depend on it."),
    ))


@dataclass(frozen=True)
class PanoramaPlan:
    """The windows every host's tiler runs, in latent positions: window (h, w), stride (h, w), wrap
    (vertical, horizontal); the window weights and how many windows share a model call."""
    window: tuple
    stride: tuple
    wrap: tuple
    weights: str
    batch: int


def build(target, window_width, window_height, stride, wrap, weights, window_batch):
    """The PanoramaPlan of these params (pixels) on `target`: its latent scale and native window."""
    window, strides, wraps = pixel_settings(window_width, window_height, stride, wrap, weights, window_batch,
                                            target.latent_scale, target.native_window)
    return PanoramaPlan(window, strides, wraps, weights, window_batch)
