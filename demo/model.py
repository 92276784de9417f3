"""The demo model: text encoder + UNet + the SD1.x noise schedule, and its weights file.

In sigma space (what the pack's core and the hosts use) a sample is x = x0 + sigma * eps
and the model's output is the denoised prediction D(x, sigma) = x - sigma * eps with
eps = unet(x / sqrt(sigma^2 + 1), t(sigma), context): the same convention as ComfyUI's
SD1.x models (epsilon prediction, scaled-linear betas 0.00085..0.012, 1000 steps).
"""
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .text import TextEncoder
from .unet import UNetModel

WEIGHTS = Path(__file__).resolve().parent / "model.safetensors"
CAUSAL_WEIGHTS = WEIGHTS.with_name("model_causal.safetensors")  # the same model fine-tuned with a causal text encoder


def alphas_cumprod(steps=1000, beta_start=0.00085, beta_end=0.012):
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, dim=0)


class DemoModel(nn.Module):
    def __init__(self, unet_config=None, text_config=None):
        super().__init__()
        self.text = TextEncoder(**(text_config or {}))
        self.unet = UNetModel(**(unet_config or {}))
        abar = alphas_cumprod()
        self.register_buffer("sigmas", ((1 - abar) / abar).sqrt().float(), persistent=False)

    def timestep(self, sigma):
        """The (fractional) training timestep of a sigma, interpolated in log sigma as ComfyUI does."""
        log_sigmas = self.sigmas.log()
        s = torch.as_tensor(sigma, dtype=torch.float32).log().clamp(log_sigmas[0], log_sigmas[-1])
        idx = torch.searchsorted(log_sigmas, s.reshape(-1)).clamp(1, len(log_sigmas) - 1)
        lo, hi = log_sigmas[idx - 1], log_sigmas[idx]
        return (idx - 1 + (s.reshape(-1) - lo) / (hi - lo)).reshape(s.shape)

    def eps(self, x, sigma, context, options=None):
        """Noise prediction at one sigma (a float) for every row of x."""
        t = self.timestep(sigma).expand(x.shape[0])
        return self.unet(x / math.sqrt(sigma ** 2 + 1), t, context, options)

    def denoise(self, x, sigma, context, options=None):
        return x - sigma * self.eps(x, sigma, context, options)

    def save(self, path, metadata=None):
        tensors = {k: v.detach().half().contiguous() for k, v in self.state_dict().items()}
        meta = {"unet_config": json.dumps(self.unet.config), "text_config": json.dumps(self.text.config), **{k: str(v) for k, v in (metadata or {}).items()}}
        save_file(tensors, str(path), metadata=meta)


def load(path=WEIGHTS):
    """(model in eval mode, float32, on CPU; the file's metadata)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: train the demo model with `python -m demo.train` "
                                "(see README, 'Demo model')")
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    # weights saved before text_config existed had a bidirectional text encoder
    text_config = json.loads(meta.get("text_config", '{"causal": false}'))
    model = DemoModel(json.loads(meta["unet_config"]), text_config)
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.eval(), meta
