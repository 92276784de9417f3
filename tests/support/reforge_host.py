"""A real reForge (REFORGE_PATH: a checkout of Panchovix/stable-diffusion-webui-reForge), headless
on the CPU, for the reForge tests. Nothing of reForge lives in this repository.

reForge's own classes do the work: its ldm_patched model (supported_models.SD15 / SDXL ->
BaseModel with its UNet and model_sampling), modules_forge.unet_patcher.UnetPatcher,
modules_forge.forge_sampler.cond_from_a1111_to_patched_ldm and
ldm_patched.modules.samplers.sampling_function. The A1111 layer above them (modules/*) is
replaced by `denoise`, mirroring reForge's modules/sd_samplers_cfg_denoiser.py:238-244 (the
conditioning modifiers, then sampling_function), and a k-diffusion Euler loop.
ldm_patched imports three names from A1111's `modules` at import time; test doubles stand in:
  modules.shared.opts                              (read for options; every option unset)
  modules.sd_samplers_kdiffusion_smea.Rescaler     (a sampler helper the tests never run)
It also needs the PyPI package torchdiffeq (ldm_patched/k_diffusion/sampling.py).
"""
import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import forge_family

REFORGE_PATH = os.environ.get("REFORGE_PATH")
SKIP_REASON = ("REFORGE_PATH is not set: point it at a stable-diffusion-webui-reForge checkout to run the "
               "real-reForge tests (needs torchdiffeq)")

_A1111_DOUBLES = {
    "__init__.py": "",
    "shared.py": "class _Opts:\n    def __getattr__(self, name):\n        return None\n\n\nopts = _Opts()\n",
    "sd_samplers_kdiffusion_smea.py": "class Rescaler:\n    pass\n",
}


def require_reforge():
    if not REFORGE_PATH:
        pytest.skip(SKIP_REASON)
    if REFORGE_PATH in sys.path:
        return REFORGE_PATH
    pytest.importorskip("torchdiffeq", reason="reForge's ldm_patched needs torchdiffeq")
    doubles = Path(tempfile.mkdtemp(prefix="a1111doubles")) / "modules"
    doubles.mkdir()
    for name, text in _A1111_DOUBLES.items():
        (doubles / name).write_text(text)
    sys.path[:0] = [REFORGE_PATH, str(doubles.parent)]
    from ldm_patched.modules.args_parser import args
    args.always_cpu = True
    import ldm_patched.modules.samplers  # noqa: F401
    import ldm_patched.modules.supported_models  # noqa: F401
    import modules_forge.forge_sampler  # noqa: F401
    import modules_forge.unet_patcher  # noqa: F401
    return REFORGE_PATH


def unet_patcher(comfy_patcher, kind, unet_config):
    """A reForge UnetPatcher over reForge's model of that kind holding the ComfyUI tiny model's weights."""
    require_reforge()
    import ldm_patched.modules.supported_models as supported
    from ldm_patched.modules import model_management
    from modules_forge.unet_patcher import UnetPatcher
    config = (supported.SD15 if kind == "sd1" else supported.SDXL)(dict(unet_config))
    if kind == "sdxl":
        config.unet_config["num_head_channels"] = 16
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    missing, unexpected = model.diffusion_model.load_state_dict(comfy_patcher.model.diffusion_model.state_dict(),
                                                                strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    cpu = model_management.get_torch_device()
    patcher = UnetPatcher(model, load_device=cpu, offload_device=cpu)
    return patcher


def denoise(patcher, x, sigma, cond, uncond, cfg):
    from ldm_patched.modules.samplers import sampling_function
    from modules_forge.forge_sampler import cond_from_a1111_to_patched_ldm
    return forge_family.denoise(patcher, x, sigma, cond_from_a1111_to_patched_ldm(cond),
                                cond_from_a1111_to_patched_ldm(uncond), cfg, sampling_function)


def sample_euler(patcher, noise, sigmas, cond, uncond, cfg):
    from ldm_patched.modules import model_management
    model_management.load_models_gpu([patcher])
    patcher.pre_run()  # what reForge's sampling_prepare does through load_models_gpu: the model knows its patcher
    return forge_family.euler(lambda x, sigma: denoise(patcher, x, sigma, cond, uncond, cfg), noise, sigmas)
