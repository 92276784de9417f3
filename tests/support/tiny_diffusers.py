"""Tiny random diffusers models and pipelines for the reference tests (CPU, offline).

Recipe: /work/shared/research/reference-algorithms.md section 9. No text encoder, tokenizer or
VAE is built: the tests pass prompt embeddings directly and ask for latents
(output_type="latent"), which the SAG/PAG pipelines allow with those components set to None.
Pix2Pix-Zero's pipeline is the exception: it wants a VAE (tiny_vae, random weights).
"""
import logging

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPAGPipeline,
                       StableDiffusionSAGPipeline, StableDiffusionXLPAGPipeline, UNet2DConditionModel)
from diffusers.utils import logging as diffusers_logging

diffusers_logging.set_verbosity_error()
logging.getLogger("diffusers").setLevel(logging.ERROR)

# SD1-shaped: attention at both levels and in the middle, attention_head_dim=8 meaning 8 heads
# (diffusers' SAG reads this field as the head count; here it is one).
SD1_UNET = dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
                down_block_types=("CrossAttnDownBlock2D",) * 2, up_block_types=("CrossAttnUpBlock2D",) * 2,
                cross_attention_dim=32, attention_head_dim=8)
SD1_CONTEXT_DIM = 32

# SDXL-shaped: no attention at level 0, depth-2 transformers at level 1 and in the middle, linear
# projections, text_time added conditioning (6 time ids x 8 + pooled 32 = 80).
SDXL_UNET = dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                 attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
                 addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
                 projection_class_embeddings_input_dim=80, cross_attention_dim=64)
SDXL_CONTEXT_DIM = 64
SDXL_POOLED_DIM = 32

SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                    set_alpha_to_one=False, steps_offset=1)
SDXL_EULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading",
                  steps_offset=1)

_NO_EXTRAS = dict(vae=None, text_encoder=None, tokenizer=None, feature_extractor=None, image_encoder=None)


def _unet(config, seed):
    torch.manual_seed(seed)
    return UNet2DConditionModel(**config).eval().requires_grad_(False)


def sd1_unet(seed=0):
    return _unet(SD1_UNET, seed)


def sdxl_unet(seed=0):
    return _unet(SDXL_UNET, seed)


def ddim():
    return DDIMScheduler(**SD_SCHEDULER)


def euler():
    return EulerDiscreteScheduler(**SDXL_EULER)


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sag_pipeline(unet):
    return _quiet(StableDiffusionSAGPipeline(unet=unet, scheduler=ddim(), safety_checker=None,
                                             requires_safety_checker=False, **_NO_EXTRAS))


def pag_pipeline(unet, layers="mid"):
    return _quiet(StableDiffusionPAGPipeline(unet=unet, scheduler=ddim(), safety_checker=None,
                                             requires_safety_checker=False, pag_applied_layers=layers,
                                             **_NO_EXTRAS))


def sdxl_pag_pipeline(unet, layers="mid"):
    return _quiet(StableDiffusionXLPAGPipeline(unet=unet, scheduler=euler(), text_encoder_2=None, tokenizer_2=None,
                                               add_watermarker=False, pag_applied_layers=layers, **_NO_EXTRAS))


def tiny_vae():
    torch.manual_seed(0)
    return AutoencoderKL(block_out_channels=(16,) * 4, layers_per_block=1, norm_num_groups=8, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4).eval()


def pix2pix_zero_pipeline(unet):
    from diffusers import DDIMInverseScheduler, StableDiffusionPix2PixZeroPipeline  # deprecated: loaded when used
    return _quiet(StableDiffusionPix2PixZeroPipeline(
        vae=tiny_vae(), text_encoder=None, tokenizer=None, unet=unet, scheduler=ddim(), feature_extractor=None,
        safety_checker=None, inverse_scheduler=DDIMInverseScheduler.from_config(ddim().config),
        caption_generator=None, caption_processor=None, requires_safety_checker=False))


def randn(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def relative(a, reference):
    """max |a - reference| / max |reference|"""
    return float((a - reference).abs().max() / reference.abs().max())
