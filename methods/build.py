"""One signature for every method's build, as k-diffusion has one for every sampler:

    build(target, **params) -> what the hosts install

For the router methods (SAG, PAG, SEGA) that is a Built, below; Attend-and-Excite's and the panorama's
give the plan their hosts' latent mover and tiler run (methods/attend_excite.ExcitePlan,
methods/panorama.PanoramaPlan). Pix2Pix-Zero has none: its params are spread over three ComfyUI nodes
(direction, inversion, edit); methods/pix2pix_zero.inversion_settings serves every host.

params are the method's SPEC params by name (the ComfyUI node's execute() inputs). The host adapter
says what the model is (Target) and installs what comes back: Built.method on its router, and
Built.post_cfg after CFG, called as post_cfg(step) with the step seen through a Step:

    step.x, step.sigma         the step's input latent and sigma (sigma space)
    step.denoised              the CFG result so far
    step.cond_denoised         the conditional prediction (AND prompts combined)
    step.uncond_denoised       the unconditional prediction; None where the host ran none (CFG 1)
    step.ctx                   the router's StepContext
    step.timestep              the model's timestep on diffusers' 0-1000 scale
    step.copies(key)           method `key`'s copies of the conditional rows (extra_cond_rows), laid
                               out and combined like cond_denoised; None if they did not run
    step.rows(role)            rows of `role` from a method's extra_rows, one per image; None if absent
    step.branch_denoised(b)    the prediction of the rows of branch b (COND: each image's first prompt)
    step.branch_labels(b)      the attention call labels (options["cond_or_uncond"]) of those rows
    step.run_extra(b, x)       one more model pass on the rows of branch b at latent x, untouched by
                               any hook; its denoised prediction
    step.run_state(key)        a dict kept for the whole generation (empty each step if the host keeps none)
    step.warn(message)         a warning, once per generation
"""
from dataclasses import dataclass
from typing import Callable

from ..attention.layers import parse_layers
from ..attention.router import Method


@dataclass(frozen=True)
class Target:
    """What a method is built for: its key on the model's router, the model's family ("unet", or a
    DiT family of attention.dit_blocks) and attention layers (attention.layers.Layer)."""
    key: str
    family: str = "unet"
    layers: tuple = ()
    levels: dict = None   # a UNet's cross-attention layers by downscale (attention.unet_levels), for methods reading them
    latent_scale: int = 8   # pixels per latent position
    native_window: int = 64  # the latent size the model was trained at

    def select(self, text, input_name, auto):
        """The layers `text` names (attention.layers syntax); `auto` is what "auto" stands for here.
        Raises attention.layers.LayerSelectionError listing the model's layers."""
        return parse_layers(text, self.layers, input_name, auto)


@dataclass(frozen=True)
class Built:
    """What a host installs; method None = nothing to install (e.g. scale 0)."""
    method: Method = None
    post_cfg: Callable = None
