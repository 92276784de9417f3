"""A real ComfyUI, headless on the CPU, for the host tests (COMFYUI_PATH).

Builds tiny random SD1- and SDXL-shaped models with ComfyUI's own model classes and
samples with ComfyUI's own sampler. No ComfyUI code lives in this repository.
"""
import contextlib
import os
import sys
from pathlib import Path

import pytest
import torch

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
SKIP_REASON = ("COMFYUI_PATH is not set: point it at a ComfyUI checkout (see README, 'Testing against a real "
               "ComfyUI') to run the real-host tests")


SHIM_HELP = ("COMFYUI_PATH is set but {name} does not import ({error}). ComfyUI imports torchvision (and newer "
             "versions torchaudio) at start-up. On a CPU-only torch with PyPI's CUDA-only torchvision 0.28, put the "
             "cpu-shim folder first on PYTHONPATH (here: PYTHONPATH=/work/shared/tools/cpu-shim, i.e. "
             "../shared/tools/cpu-shim next to the repository; see README, 'Testing against a real ComfyUI'); "
             "otherwise install a torchvision and torchaudio that match your torch.")


def host_import_problem():
    """None when the torchvision and torchaudio that ComfyUI imports import; else how to get them."""
    for name in ("torchvision", "torchaudio"):
        try:
            __import__(name)
        except Exception as e:  # noqa: BLE001  (a CUDA-only wheel fails with RuntimeError, not ImportError)
            return SHIM_HELP.format(name=name, error=f"{type(e).__name__}: {e}")
    return None


def require_comfy():
    if not COMFYUI_PATH:
        pytest.skip(SKIP_REASON)
    if COMFYUI_PATH not in sys.path:
        problem = host_import_problem()
        if problem:
            pytest.fail(problem, pytrace=False)
        sys.path.insert(0, COMFYUI_PATH)
        from comfy.cli_args import args
        args.cpu = True
    import comfy.model_management  # noqa: F401
    return COMFYUI_PATH


def builtin(node_class, *args):
    """The first output of one of ComfyUI's own nodes, whichever node API that version gives it:
    V3 (classmethod execute -> NodeOutput) or V1 (FUNCTION on an instance -> tuple)."""
    if hasattr(node_class, "execute"):
        return node_class.execute(*args).args[0]
    return getattr(node_class(), node_class.FUNCTION)(*args)[0]


class QuietServer:
    """What PromptExecutor needs of ComfyUI's PromptServer when nobody listens."""
    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, *a, **k):
        pass

    def queue_updated(self):
        pass


def prompt_executor(server=None):
    """ComfyUI's own execution.PromptExecutor with the classic cache, on every tested version:
    0.3.x takes (server, cache_type, cache_size); 0.33 also needs cache_args with the RAM
    headroom its execute() reads (0 GB: no RAM-pressure release, as main.py sets for the
    classic cache)."""
    import inspect
    import execution
    kwargs = {"cache_type": execution.CacheType.CLASSIC}
    if "cache_args" in inspect.signature(execution.PromptExecutor.__init__).parameters:
        kwargs["cache_args"] = {"lru": 0, "ram": 0, "ram_inactive": 0}
    return execution.PromptExecutor(server or QuietServer(), **kwargs)


def _init(model):
    """Weights scaled by fan-in, norms near identity: activations stay O(1), so every
    layer (and every guidance method) visibly matters."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.diffusion_model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


POOLED_DIM = 32
# SD1-shaped: attention at input 1, 3 / middle 0 / output 0-3, 8 heads of 4 channels.
SD1_UNET = {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
            "adm_in_channels": None, "in_channels": 4, "out_channels": 4, "model_channels": 32,
            "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1],
            "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1,
            "use_linear_in_transformer": False, "context_dim": 32, "num_heads": 8, "num_head_channels": -1,
            "use_temporal_attention": False, "use_temporal_resblock": False}
# SDXL-shaped: no attention at level 0, depth-2 transformers at level 1 and in the middle, 4 heads of 16.
SDXL_UNET = {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
             "num_classes": "sequential", "adm_in_channels": POOLED_DIM + 6 * 256, "in_channels": 4, "out_channels": 4,
             "model_channels": 32, "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [0, 2],
             "transformer_depth_output": [0, 0, 2, 2], "transformer_depth_middle": 2,
             "use_linear_in_transformer": True, "context_dim": 64, "num_head_channels": 16,
             "use_temporal_attention": False, "use_temporal_resblock": False}


def sd1_config():
    require_comfy()
    import comfy.supported_models
    cfg = comfy.supported_models.SD15(dict(SD1_UNET))
    cfg.set_inference_dtype(torch.float32, None)
    return cfg


def sdxl_config():
    require_comfy()
    import comfy.supported_models
    cfg = comfy.supported_models.SDXL(dict(SDXL_UNET))
    cfg.unet_config["num_head_channels"] = 16  # SDXL's config forces 64, which would leave one head
    cfg.set_inference_dtype(torch.float32, None)
    return cfg


def tiny_sd1():
    return _patcher(_init(sd1_config().get_model({})))


def tiny_sdxl():
    model = sdxl_config().get_model({})
    assert model.diffusion_model.middle_block[1].transformer_blocks[0].attn1.heads == 4
    return _patcher(_init(model))


def _patcher(model):
    import comfy.model_management as mm
    import comfy.model_patcher
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


@contextlib.contextmanager
def tiny_unet_file(folder):
    """tiny_sd1's UNet saved as <folder>/attnguide_tiny_sd15.safetensors, a file ComfyUI's UNETLoader
    finds (the folder is added to diffusion_models) and detects while this is open (a model config
    for its sizes is registered)."""
    require_comfy()
    import comfy.supported_models
    import folder_paths
    import safetensors.torch

    class TinySD15(comfy.supported_models.SD15):
        unet_config = {"context_dim": 32, "model_channels": 32, "use_linear_in_transformer": False,
                       "adm_in_channels": None, "use_temporal_attention": False}

    comfy.supported_models.models.insert(0, TinySD15)
    path = Path(folder) / "attnguide_tiny_sd15.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in tiny_sd1().model.diffusion_model.state_dict().items()},
                                str(path))
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    try:
        yield path
    finally:
        comfy.supported_models.models.remove(TinySD15)


def conds(model, batch=1, seed=1):
    """Random positive and empty negative CONDITIONING matching the model's context size."""
    g = torch.Generator().manual_seed(seed)
    dm = model.model.diffusion_model
    ctx_dim = dm.input_blocks[1][-1].transformer_blocks[0].attn2.to_k.in_features if hasattr(dm.input_blocks[1][-1], "transformer_blocks") \
        else dm.middle_block[1].transformer_blocks[0].attn2.to_k.in_features
    extra = {}
    if getattr(model.model, "adm_channels", 0):
        extra = {"pooled_output": torch.randn(batch, 32, generator=g), "width": 128, "height": 128,
                 "crop_w": 0, "crop_h": 0, "target_width": 128, "target_height": 128}
    pos = [[torch.randn(batch, 77, ctx_dim, generator=g), dict(extra)]]
    neg_extra = {k: (torch.zeros_like(v) if torch.is_tensor(v) else v) for k, v in extra.items()}
    neg = [[torch.zeros(batch, 77, ctx_dim), neg_extra]]
    return pos, neg


def sample(model, pos, neg, latent, steps=4, cfg=5.0, sampler="euler", scheduler="normal", seed=0, sigmas=None, denoise=1.0):
    import comfy.sample
    import comfy.samplers
    noise = comfy.sample.prepare_noise(latent, seed)
    if sigmas is None:
        return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, pos, neg, latent,
                                   denoise=denoise, disable_pbar=True, seed=seed)
    return comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.sampler_object(sampler), sigmas, pos, neg,
                                      latent, disable_pbar=True, seed=seed)
