"""Guidance rescale (Lin et al. 2023, 'Common Diffusion Noise Schedules...'), as diffusers'
rescale_noise_cfg: match the std of the guided noise to the conditional one, then mix."""
from .sigma_space import from_eps, to_eps


def rescale_noise(guided_eps, cond_eps, phi):
    dims = list(range(1, guided_eps.ndim))
    std_cond = cond_eps.std(dim=dims, keepdim=True)
    std_guided = guided_eps.std(dim=dims, keepdim=True)
    rescaled = guided_eps * (std_cond / std_guided)
    return phi * rescaled + (1 - phi) * guided_eps


def rescale_denoised(x, sigma, denoised, cond_denoised, phi):
    if phi <= 0:
        return denoised
    eps = rescale_noise(to_eps(x, sigma, denoised), to_eps(x, sigma, cond_denoised), phi)
    return from_eps(x, sigma, eps)
