"""A real Forge backend (FORGE_PATH: a checkout of lllyasviel/stable-diffusion-webui-forge),
headless on the CPU, for the Forge tests. Nothing of Forge lives in this repository.

Forge's own classes do the work: IntegratedUNet2DConditionModel (backend/nn/unet.py), KModel
with its Prediction (backend/modules/k_model.py, k_prediction.py), UnetPatcher
(backend/patcher/unet.py), compile_conditions (backend/sampling/condition.py) and
sampling_function_inner / calc_cond_uncond_batch (backend/sampling/sampling_function.py).
Only the A1111 layer above them (modules/*, which needs the whole WebUI) is replaced by
`denoise`, mirroring backend/sampling/sampling_function.py:sampling_function (359-360: the
conditioning modifiers, then sampling_function_inner), and a k-diffusion Euler loop.
The UNet gets the weights of a ComfyUI tiny model (same ldm layout), so a run can be set
against the ComfyUI nodes on the same weights, noise and sigmas.
"""
import os
import sys

import pytest
import torch

import forge_family

FORGE_PATH = os.environ.get("FORGE_PATH")
SKIP_REASON = "FORGE_PATH is not set: point it at a stable-diffusion-webui-forge checkout to run the real-Forge tests"


def require_forge():
    if not FORGE_PATH:
        pytest.skip(SKIP_REASON)
    if FORGE_PATH not in sys.path:
        sys.path[:0] = [FORGE_PATH, os.path.join(FORGE_PATH, "packages_3rdparty")]
        argv, sys.argv = sys.argv, [sys.argv[0], "--always-cpu"]  # backend/args.py parses sys.argv on import
        try:
            import backend.patcher.unet  # noqa: F401
            import backend.sampling.sampling_function  # noqa: F401
        finally:
            sys.argv = argv
    return FORGE_PATH


def unet_patcher(comfy_patcher, unet_config):
    """A Forge UnetPatcher over a Forge UNet holding the ComfyUI tiny model's weights."""
    require_forge()
    from backend.modules.k_model import KModel
    from backend.modules.k_prediction import Prediction
    from backend.nn.unet import IntegratedUNet2DConditionModel
    from backend.patcher.unet import UnetPatcher
    keys = ("in_channels", "model_channels", "out_channels", "num_res_blocks", "channel_mult", "num_classes",
            "use_checkpoint", "num_heads", "num_head_channels", "use_spatial_transformer", "transformer_depth",
            "context_dim", "use_linear_in_transformer", "adm_in_channels", "transformer_depth_middle",
            "transformer_depth_output")
    config = {k: unet_config[k] for k in keys if k in unet_config}
    unet = IntegratedUNet2DConditionModel(**config)
    missing, unexpected = unet.load_state_dict(comfy_patcher.model.diffusion_model.state_dict(), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    unet.storage_dtype = unet.computation_dtype = torch.float32
    cpu = torch.device("cpu")
    unet.load_device = unet.offload_device = unet.initial_device = cpu
    model = KModel(unet, diffusers_scheduler=None, k_predictor=Prediction(prediction_type="epsilon"))
    return UnetPatcher(model, load_device=cpu, offload_device=cpu, current_device=cpu)


def a1111_cond(conditioning, model=None):
    """ComfyUI CONDITIONING -> what A1111's get_learned_conditioning gives (SDXL: crossattn + vector)."""
    tensor, extras = conditioning[0]
    if model is None or not getattr(model.model, "adm_channels", 0):
        return tensor
    return {"crossattn": tensor, "vector": model.model.encode_adm(**extras)}


def denoise(patcher, x, sigma, cond, uncond, cfg):
    from backend.sampling.condition import compile_conditions
    from backend.sampling.sampling_function import sampling_function_inner
    return forge_family.denoise(patcher, x, sigma, compile_conditions(cond), compile_conditions(uncond), cfg,
                                sampling_function_inner)


def sample_euler(patcher, noise, sigmas, cond, uncond, cfg):
    return forge_family.euler(lambda x, sigma: denoise(patcher, x, sigma, cond, uncond, cfg), noise, sigmas)
