"""Tiny random diffusion transformers built with a real ComfyUI's own model classes
(comfy.supported_models SD3 / Flux / QwenImage from a hand-written config: model detection
hard-codes the real sizes), and one sampling run of them with ComfyUI's own sampler."""
import inspect

import torch

import comfy_host as H

SIGMAS = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
CONTEXT_DIM = POOLED_DIM = 32


def _patcher(config_class, unet_config, seed):
    import comfy.model_patcher
    torch.manual_seed(seed)
    config = config_class(unet_config)
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    for p in model.diffusion_model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    model.diffusion_model.to(torch.float32)
    return comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))


def flux(guidance=False, seed=0):
    import comfy.ldm.flux.model as flux_model
    import comfy.supported_models as sm
    newer = {"txt_ids_dims": []} if "txt_ids_dims" in inspect.signature(flux_model.FluxParams).parameters else {}
    return _patcher(sm.Flux, {**newer, "image_model": "flux", "in_channels": 16, "patch_size": 2, "out_channels": 16,
                              "vec_in_dim": POOLED_DIM, "context_in_dim": CONTEXT_DIM, "hidden_size": 64, "mlp_ratio": 2.0,
                              "num_heads": 2, "depth": 2, "depth_single_blocks": 3, "axes_dim": [8, 12, 12],
                              "theta": 10000, "qkv_bias": True, "guidance_embed": guidance}, seed)


def sd3(seed=0):
    import comfy.supported_models as sm
    return _patcher(sm.SD3, {"in_channels": 16, "pos_embed_scaling_factor": None, "patch_size": 2, "depth": 3,
                             "num_patches": 64 * 64, "pos_embed_max_size": 64, "adm_in_channels": POOLED_DIM,
                             "context_embedder_config": {"target": "torch.nn.Linear",
                                                         "params": {"in_features": CONTEXT_DIM, "out_features": 192}},
                             "out_channels": 16}, seed)


def qwen_image(seed=0):
    import comfy.supported_models as sm
    return _patcher(sm.QwenImage, {"image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16,
                                   "num_layers": 3, "attention_head_dim": 32, "num_attention_heads": 2,
                                   "joint_attention_dim": CONTEXT_DIM, "axes_dims_rope": (8, 12, 12)}, seed)


def chroma(seed=0):
    """Chroma's modulation table has 344 rows, i.e. Flux.1's 19 double and 38 single blocks."""
    import comfy.ldm.chroma.model as chroma_model
    import comfy.supported_models as sm
    fields = inspect.signature(chroma_model.ChromaParams).parameters
    newer = {k: v for k, v in (("txt_ids_dims", []), ("vec_in_dim", POOLED_DIM)) if k in fields}
    return _patcher(sm.Chroma, {**newer, "image_model": "chroma", "in_channels": 64, "out_channels": 64,
                                "context_in_dim": CONTEXT_DIM, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2,
                                "depth": 19, "depth_single_blocks": 38, "axes_dim": [8, 12, 12], "theta": 10000,
                                "patch_size": 2, "qkv_bias": True, "in_dim": 64, "out_dim": 64, "hidden_dim": 64,
                                "n_layers": 2}, seed)


FAMILIES = {"flux": flux, "sd3": sd3, "qwen_image": qwen_image, "chroma": chroma}


def conds(batch, seed=1, guidance=None):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        extras = {"pooled_output": torch.randn(batch, POOLED_DIM, generator=g)}
        if guidance is not None:
            extras["guidance"] = guidance
        out.append([[torch.randn(batch, 7, CONTEXT_DIM, generator=g) * 3, extras]])
    return out


def latent(family, batch, shape):
    return torch.zeros(batch, 16, 1, *shape) if family == "qwen_image" else torch.zeros(batch, 16, *shape)


def sample(model, family, batch=2, cfg=3.0, shape=(8, 12), pos_neg=None, sigmas=SIGMAS, noise=None):
    import comfy.sample
    import comfy.samplers
    pos, neg = pos_neg or conds(batch, guidance=3.5 if family == "flux" else None)
    lat = latent(family, batch, shape)
    noise = comfy.sample.prepare_noise(lat, 0) if noise is None else noise
    return comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.sampler_object("euler"), sigmas, pos, neg, lat,
                                      disable_pbar=True, seed=0)


def require_family(name):
    H.require_comfy()
    return FAMILIES[name]()
