"""What the real Forge and reForge test hosts (forge_host.py, reforge_host.py) do alike: import
the host with comfy_host's torchvision stub out of transformers' way, A1111's denoiser step
around the host's sampling function, and the Euler loop."""
import contextlib
import sys

import torch


@contextlib.contextmanager
def torchvision_stub_hidden():
    """comfy_host's torchvision stub lacks what transformers wants: hide it (and transformers'
    cached answer) while the host imports transformers, then put it back."""
    stubs = [p for p in sys.path if "tvstub" in p]
    stub_modules = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] == "torchvision"}
    sys.path[:] = [p for p in sys.path if p not in stubs]
    _forget_torchvision()
    try:
        yield
    finally:
        sys.path[:0] = stubs
        sys.modules.update(stub_modules)
        _forget_torchvision()


def _forget_torchvision():
    """transformers caches whether torchvision is there; ask it again."""
    import_utils = sys.modules.get("transformers.utils.import_utils")
    for name in ("is_torchvision_available", "is_torchvision_v2_available"):
        cache_clear = getattr(getattr(import_utils, name, None), "cache_clear", None)
        if cache_clear is not None:
            cache_clear()


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
