"""One set of UNet weights in both diffusers and a real ComfyUI, for comparing the
pack's nodes with diffusers' reference pipelines.

A tiny UNet is built (random init) with diffusers, its state dict is converted with
ComfyUI's own key map (comfy.utils.unet_to_diffusers) and loaded strictly into a ComfyUI
SD1.5 / SDXL model. diffusers samples with DDIM (eta 0); ComfyUI samples with Euler on
the same schedule written as sigmas, sigma_i = sqrt((1 - abar_i) / abar_i). A DDIM(eta=0)
step is exactly an Euler step in sigma space, with x = x_t / sqrt(abar_t), so the two
runs agree up to float rounding (see shared research, reference-algorithms.md sections 2 and 9).
"""
import importlib.util
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

import comfy_host as H

STEPS = 4


def import_diffusers():
    """The diffusers classes the comparison uses; skips when diffusers is not installed."""
    H.require_comfy()
    if importlib.util.find_spec("diffusers") is None:
        pytest.skip("diffusers is not installed: `pip install diffusers` into ComfyUI's Python to run the "
                    "nodes-vs-diffusers comparison")
    import diffusers
    try:
        sag = diffusers.StableDiffusionSAGPipeline
    except AttributeError:  # only under pipelines.deprecated
        from diffusers.pipelines.deprecated.stable_diffusion_sag.pipeline_stable_diffusion_sag import \
            StableDiffusionSAGPipeline as sag
    return SimpleNamespace(SD=diffusers.StableDiffusionPipeline, SAG=sag, PAG=diffusers.StableDiffusionPAGPipeline,
                           XL_PAG=diffusers.StableDiffusionXLPAGPipeline, SEGA=diffusers.SemanticStableDiffusionPipeline,
                           UNet=diffusers.UNet2DConditionModel,
                           DDIM=diffusers.DDIMScheduler, version=diffusers.__version__)


def ddim_scheduler():
    from tiny_diffusers import ddim
    return ddim()


@dataclass
class Schedule:
    timesteps: list      # DDIM's integer timesteps
    abar: list           # alpha_cumprod at each timestep, then DDIM's final_alpha_cumprod
    sigmas: torch.Tensor  # the same as sigmas, for ComfyUI


def ddim_schedule(steps=STEPS):
    s = ddim_scheduler()
    s.set_timesteps(steps)
    timesteps = [int(t) for t in s.timesteps]
    abar = [float(s.alphas_cumprod[t]) for t in timesteps] + [float(s.final_alpha_cumprod)]
    sigmas = torch.tensor([((1 - a) / a) ** 0.5 for a in abar], dtype=torch.float32)
    return Schedule(timesteps, abar, sigmas)


def _convert(unet, cfg):
    """ComfyUI model with the diffusers UNet's weights (strict: every key on both sides)."""
    import comfy.utils
    model = cfg.get_model({})
    key_map = comfy.utils.unet_to_diffusers(cfg.unet_config)  # diffusers key -> ldm key
    state = unet.state_dict()
    unmapped = sorted(set(state) - set(key_map))
    assert not unmapped, f"diffusers keys ComfyUI's map does not know: {unmapped[:5]}"
    model.diffusion_model.load_state_dict({key_map[k]: v for k, v in state.items()}, strict=True)
    return H._patcher(model)


def tiny_sd1_pair(seed=0):
    """(diffusers UNet, ComfyUI ModelPatcher) with identical SD1-shaped weights: 8 heads,
    self-attention at d1.0, d3.0, m0.0 and u0.0-u3.0 (ComfyUI block ids)."""
    from tiny_diffusers import sd1_unet
    unet = sd1_unet(seed)
    return unet, _convert(unet, H.sd1_config())


def tiny_sdxl_pair(seed=0):
    """SDXL-shaped: no attention at level 0, depth-2 transformers at level 1 and in the middle,
    4 heads of 16 channels, 256-dim size embeddings (ComfyUI's SDXL hard-codes 256)."""
    from diffusers import UNet2DConditionModel
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2), attention_head_dim=(4, 4), use_linear_projection=True,
        cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=H.POOLED_DIM + 6 * 256).eval()
    return unet, _convert(unet, H.sdxl_config())


def pipeline(cls, unet, **kwargs):
    """A diffusers pipeline around `unet` with no text encoder, tokenizer or VAE: the
    tests pass prompt embeddings and take latents out."""
    parts = dict(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=ddim_scheduler(),
                 feature_extractor=None, image_encoder=None)
    if "XL" in cls.__name__:
        parts.update(text_encoder_2=None, tokenizer_2=None, add_watermarker=False)
    else:
        parts.update(safety_checker=None, requires_safety_checker=False)
    pipe = cls(**parts, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def comfy_sample(model, latents, positive, negative, cfg, schedule):
    """ComfyUI's own sampler (Euler on the DDIM sigmas) from diffusers' initial latents x_t;
    returns the final latents in diffusers' units (x_t at DDIM's final alpha)."""
    import comfy.sample
    import comfy.samplers
    sampling = model.model.model_sampling
    t_back = sampling.timestep(schedule.sigmas[:-1]).tolist()
    assert t_back == schedule.timesteps, (t_back, schedule.timesteps)
    sigma0 = float(schedule.sigmas[0])
    # KSAMPLER starts from noise * sigma0 + latent_image, or noise * sqrt(1 + sigma0^2) at sigma_max
    max_denoise = sigma0 >= float(sampling.sigma_max) * (1 - 1e-5)
    x0 = latents / schedule.abar[0] ** 0.5  # sigma-space start
    noise = x0 / ((1 + sigma0 ** 2) ** 0.5 if max_denoise else sigma0)
    out = comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.sampler_object("euler"), schedule.sigmas,
                                     positive, negative, torch.zeros_like(latents), disable_pbar=True, seed=0)
    x = model.model.latent_format.process_in(out)  # undo process_latent_out
    return x * schedule.abar[-1] ** 0.5


def eps_both(unet, model, x_t, t, context, added_cond_kwargs=None, adm=None):
    """One UNet evaluation in each: diffusers' eps and ComfyUI's eps = (x - D) / sigma."""
    s = ddim_scheduler()
    abar = float(s.alphas_cumprod[t])
    sigma = torch.tensor([((1 - abar) / abar) ** 0.5])
    with torch.no_grad():
        eps_d = unet(x_t, t, encoder_hidden_states=context, added_cond_kwargs=added_cond_kwargs).sample
        x = x_t / abar ** 0.5
        kw = {} if adm is None else {"y": adm}
        denoised = model.model.apply_model(x, sigma, c_crossattn=context, **kw)
    return eps_d, (x - denoised) / sigma
