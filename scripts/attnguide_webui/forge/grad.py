"""Gradient-enabled UNet forwards on Forge and reForge (Attend-and-Excite, Pix2Pix-Zero)."""
import contextlib

import torch

from ....attention.grad_forward import gradients_through
from .router import host


@contextlib.contextmanager
def gradient_forward(model, model_options):
    """Gradients through the UNet's forward w.r.t. its input only (no .grad on weights).
    Forge's transformer blocks add the attention output to their input in place (x += n,
    backend/nn/unet.py:240, 272), which autograd refuses for an input its LayerNorm saved;
    on Forge each LayerNorm gets (and saves) a copy while the forward runs."""
    handles = []
    try:
        with gradients_through(model.diffusion_model):
            if host(model_options).name == "forge":
                for module in model.diffusion_model.modules():
                    if isinstance(module, torch.nn.LayerNorm):
                        handles.append(module.register_forward_pre_hook(lambda m, args: (args[0].clone(), *args[1:])))
            yield
    finally:
        for handle in handles:
            handle.remove()
