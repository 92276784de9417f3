"""What the real Forge and reForge test hosts (forge_host.py, reforge_host.py) do alike:
A1111's denoiser step around the host's sampling function, and the Euler loop."""
import torch


def denoise(patcher, x, sigma, cond, uncond, cfg, sampling_function):
    """A1111's denoiser on these hosts: the conditioning modifiers, then the host's sampling
    function (cond and uncond already in the host's own form)."""
    model, model_options, seed = patcher.model, patcher.model_options, 0
    sigma = sigma.expand(x.shape[0])
    for modifier in model_options.get("conditioning_modifiers", []):
        model, x, sigma, uncond, cond, cfg, model_options, seed = modifier(
            model, x, sigma, uncond, cond, cfg, model_options, seed)
    return sampling_function(model, x, sigma, uncond, cond, cfg, model_options, seed)


def euler(denoised, noise, sigmas):
    """k-diffusion's sample_euler (no churn), as ComfyUI's 'euler' and A1111's 'Euler' run it, from
    noise scaled the way both scale it at the model's largest sigma; denoised(x, sigma)."""
    x = noise * (1.0 + sigmas[0] ** 2) ** 0.5
    with torch.no_grad():
        for i in range(len(sigmas) - 1):
            x = x + (x - denoised(x, sigmas[i])) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x
