"""Self-Attention Guidance (Hong et al. 2023) in sigma space, as diffusers' SAG pipeline.

key_mass is the per-key column sum of the head-averaged self-attention map of one
layer (attention.math.attention_with_key_mass): where a latent position receives
more than `threshold` attention, the prediction is blurred; the model is asked
again on the re-noised blurred prediction and the difference guides away from it.
"""
import math

import torch
import torch.nn.functional as F


def grid_shape(tokens, latent_hw, grid_hw=None):
    """(h, w) of a layer's token grid: the host's activation shape when it gives one,
    else the latent size halved (rounding up) until it has `tokens` positions."""
    if grid_hw is not None and grid_hw[0] * grid_hw[1] == tokens:
        return tuple(grid_hw)
    h, w = latent_hw
    for _ in range(8):
        if h * w == tokens:
            return h, w
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    raise ValueError(f"cannot place {tokens} attention tokens on a grid for a {latent_hw} latent")


def attention_mask(key_mass, grid_hw, latent_hw, threshold=1.0):
    """(b, 1, H, W) float mask of positions whose received attention exceeds threshold."""
    mask = (key_mass > threshold).to(key_mass.dtype).reshape(key_mass.shape[0], 1, *grid_hw)
    return F.interpolate(mask, size=tuple(latent_hw), mode="nearest")


def gaussian_blur(x, sigma, kernel_size=9):
    """Separable Gaussian blur with reflect padding; the kernel shrinks on tiny latents."""
    if sigma <= 0:
        return x
    half = min(kernel_size // 2, x.shape[-2] - 1, x.shape[-1] - 1)
    if half < 1:
        return x
    size = 2 * half + 1
    t = torch.linspace(-(kernel_size - 1) / 2, (kernel_size - 1) / 2, kernel_size, dtype=torch.float32)
    t = t[kernel_size // 2 - half: kernel_size // 2 + half + 1]
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.device, x.dtype)
    c = x.shape[1]
    y = F.pad(x, [half] * 4, mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)
    return F.conv2d(y, k.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)


def degrade(denoised, mask, blur_sigma):
    """Blur the prediction where the mask is on."""
    return gaussian_blur(denoised, blur_sigma) * mask + denoised * (1 - mask)


def degraded_input(x, denoised, degraded):
    """Re-noise the degraded prediction with the branch's own noise estimate."""
    return degraded + (x - denoised)


def sag_guidance(denoised, degraded, degraded_prediction, scale):
    """D_guided + s * (degraded - D(degraded input)), equal to eps + s * (eps_branch - eps_degraded)."""
    return denoised + scale * (degraded - degraded_prediction)


def degraded_branch(x, denoised, key_mass, grid_hw, threshold, blur_sigma):
    """The branch's prediction blurred where the captured map says, and the input the model
    is asked again on: (degraded, degraded_input). A (b, c, frames, h, w) latent (Qwen-Image's, one
    frame) is blurred frame by frame with the same mask."""
    if denoised.ndim == 5:
        flat = lambda t: t.reshape(t.shape[0], -1, *t.shape[-2:])
        degraded, again = degraded_branch(flat(x), flat(denoised), key_mass, grid_hw, threshold, blur_sigma)
        return degraded.reshape(denoised.shape), again.reshape(x.shape)
    latent_hw = tuple(x.shape[-2:])
    mask = attention_mask(key_mass, grid_shape(key_mass.shape[1], latent_hw, grid_hw), latent_hw, threshold)
    degraded = degrade(denoised, mask.to(denoised.dtype), blur_sigma)
    return degraded, degraded_input(x, denoised, degraded)
