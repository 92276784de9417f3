"""The nodes inside a real ComfyUI sampling run give the same latents as diffusers'
reference pipelines (StableDiffusionSAGPipeline, StableDiffusionPAGPipeline,
StableDiffusionXLPAGPipeline) on the same weights.

diffusers samples with DDIM (eta 0); ComfyUI with its Euler sampler on the same schedule
as sigmas, which is the same computation (see diffusers_in_comfy). Every case also checks
that the method visibly moved diffusers' result, so agreement is not agreement on a no-op.
Needs COMFYUI_PATH and diffusers; skips without them.
"""
import pytest
import torch

import comfy_host as H
import diffusers_in_comfy as D
from diffusers_fixtures import dif, schedule  # noqa: F401  (fixtures)
from node_runs import pag_node, rel, sag_node

TOL = 1e-4      # max abs difference / max abs reference (measured: about 2e-6)
EFFECT = 1e-3   # the method must move diffusers' own result by at least this much


@pytest.fixture(scope="module")
def sd1(dif):
    return D.tiny_sd1_pair()


@pytest.fixture(scope="module")
def sdxl(dif):
    return D.tiny_sdxl_pair()


def inputs(batch, ctx_dim, shape=(16, 16), pooled=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    data = {"prompt_embeds": torch.randn(batch, 77, ctx_dim, generator=g),
            "negative_prompt_embeds": torch.randn(batch, 77, ctx_dim, generator=g)}
    if pooled:
        data["pooled_prompt_embeds"] = torch.randn(batch, H.POOLED_DIM, generator=g)
        data["negative_pooled_prompt_embeds"] = torch.randn(batch, H.POOLED_DIM, generator=g)
    data["latents"] = torch.randn(batch, 4, *shape, generator=g)
    return data


def diffusers_run(pipe, data, guidance, **kwargs):
    h, w = data["latents"].shape[-2:]
    extra = {}
    if "pooled_prompt_embeds" in data:
        extra = dict(original_size=(8 * h, 8 * w), target_size=(8 * h, 8 * w), crops_coords_top_left=(0, 0))
    args = {k: v.clone() for k, v in data.items()}
    return pipe(**args, num_inference_steps=D.STEPS, guidance_scale=guidance, height=8 * h, width=8 * w,
                output_type="latent", **extra, **kwargs).images


def comfy_run(model, data, cfg, schedule):
    """The same inputs as ComfyUI CONDITIONING: [[embeddings, {extras}]]."""
    pos, neg = {}, {}
    if "pooled_prompt_embeds" in data:
        h, w = data["latents"].shape[-2:]
        size = {"width": 8 * w, "height": 8 * h, "crop_w": 0, "crop_h": 0, "target_width": 8 * w, "target_height": 8 * h}
        pos = dict(size, pooled_output=data["pooled_prompt_embeds"])
        neg = dict(size, pooled_output=data["negative_pooled_prompt_embeds"])
    return D.comfy_sample(model, data["latents"], [[data["prompt_embeds"], pos]],
                          [[data["negative_prompt_embeds"], neg]], cfg, schedule)


def check(ours, ref, off):
    diff, effect = rel(ours, ref), rel(off, ref)
    assert ours.shape == ref.shape
    assert diff <= TOL, f"ComfyUI node vs diffusers: relative difference {diff:.2e} (method's effect {effect:.2e})"
    assert effect >= EFFECT, f"the method moved diffusers' result by only {effect:.2e}"


# ---------------------------------------------------------------- plumbing sanity

def test_converted_weights_give_the_same_eps(sd1, sdxl):
    g = torch.Generator().manual_seed(3)
    unet, model = sd1
    context, x_t = torch.randn(1, 77, 32, generator=g), torch.randn(1, 4, 16, 16, generator=g)
    eps_d, eps_c = D.eps_both(unet, model, x_t, 751, context)
    assert rel(eps_c, eps_d) <= 1e-5

    unet, model = sdxl
    context, pooled = torch.randn(1, 77, 64, generator=g), torch.randn(1, H.POOLED_DIM, generator=g)
    time_ids = torch.tensor([[128.0, 128.0, 0.0, 0.0, 128.0, 128.0]])  # original (h, w), crop (top, left), target (h, w)
    adm = model.model.encode_adm(pooled_output=pooled, width=128, height=128, crop_w=0, crop_h=0,
                                 target_width=128, target_height=128)
    eps_d, eps_c = D.eps_both(unet, model, x_t, 501, context, {"text_embeds": pooled, "time_ids": time_ids}, adm)
    assert rel(eps_c, eps_d) <= 1e-5
    heads = {unet.mid_block.attentions[0].transformer_blocks[0].attn1.heads,
             model.model.diffusion_model.middle_block[1].transformer_blocks[0].attn1.heads}
    assert heads == {4}


def test_plain_cfg_equals_stable_diffusion_pipeline(dif, sd1, schedule):
    unet, model = sd1
    pipe = D.pipeline(dif.SD, unet)
    data = inputs(1, 32)
    ref = diffusers_run(pipe, data, 7.5)
    check(comfy_run(model, data, 7.5, schedule), ref, diffusers_run(pipe, data, 1.0))


# ---------------------------------------------------------------- SAG

@pytest.mark.parametrize("guidance", [7.5, 1.0], ids=["cfg7.5", "no_cfg"])
def test_sag_equals_diffusers(dif, sd1, schedule, guidance):
    unet, model = sd1
    pipe = D.pipeline(dif.SAG, unet)
    data = inputs(1, 32)
    ref = diffusers_run(pipe, data, guidance, sag_scale=0.75)
    ours = comfy_run(sag_node(model, scale=0.75, blur_sigma=1.0, threshold=1.0, layer="m0.0"), data, guidance, schedule)
    check(ours, ref, diffusers_run(pipe, data, guidance, sag_scale=0.0))



# ---------------------------------------------------------------- PAG

@pytest.mark.parametrize("guidance,adaptive,rescale", [(7.5, 0.0, 0.0), (7.5, 0.002, 0.7), (1.0, 0.002, 0.0)],
                         ids=["cfg", "adaptive_rescale", "no_cfg_adaptive"])
def test_pag_equals_diffusers(dif, sd1, schedule, guidance, adaptive, rescale):
    unet, model = sd1
    pipe = D.pipeline(dif.PAG, unet, pag_applied_layers="mid")
    data = inputs(1, 32)
    ref = diffusers_run(pipe, data, guidance, pag_scale=3.0, pag_adaptive_scale=adaptive, guidance_rescale=rescale)
    ours = comfy_run(pag_node(model, scale=3.0, adaptive_scale=adaptive, layers="m0", rescale=rescale), data, guidance, schedule)
    check(ours, ref, diffusers_run(pipe, data, guidance, pag_scale=0.0, guidance_rescale=rescale))


def test_pag_layer_addresses_match_diffusers_module_names(dif, sd1, schedule):
    """diffusers' down_blocks.1 is ComfyUI's input block 3; up_blocks.1.attentions.0 is output block 2."""
    unet, model = sd1
    pipe = D.pipeline(dif.PAG, unet, pag_applied_layers=["down_blocks.1", "up_blocks.1.attentions.0"])
    data = inputs(1, 32)
    ref = diffusers_run(pipe, data, 7.5, pag_scale=3.0)
    check(comfy_run(pag_node(model, layers="d3,u2"), data, 7.5, schedule), ref, diffusers_run(pipe, data, 7.5, pag_scale=0.0))


# ---------------------------------------------------------------- batch 2, non-square

@pytest.mark.parametrize("method", ["sag", "pag"])
def test_batch2_nonsquare_equals_diffusers(dif, sd1, schedule, method):
    unet, model = sd1
    data = inputs(2, 32, shape=(16, 24))
    if method == "sag":
        pipe = D.pipeline(dif.SAG, unet)
        on, off, node = dict(sag_scale=0.75), dict(sag_scale=0.0), sag_node(model)
    else:
        pipe = D.pipeline(dif.PAG, unet)
        on, off, node = dict(pag_scale=3.0), dict(pag_scale=0.0), pag_node(model)
    ref = diffusers_run(pipe, data, 7.5, **on)
    ours = comfy_run(node, data, 7.5, schedule)
    check(ours, ref, diffusers_run(pipe, data, 7.5, **off))
    assert rel(ref[0], ref[1]) > 1e-2  # two different items, not one copied


# ---------------------------------------------------------------- SDXL

def test_sdxl_plain_cfg_equals_pipeline(dif, sdxl, schedule):
    unet, model = sdxl
    pipe = D.pipeline(dif.XL_PAG, unet)
    data = inputs(1, 64, pooled=True)
    ref = diffusers_run(pipe, data, 5.0, pag_scale=0.0)
    check(comfy_run(model, data, 5.0, schedule), ref, diffusers_run(pipe, data, 1.0, pag_scale=0.0))


@pytest.mark.parametrize("guidance,adaptive,rescale", [(5.0, 0.0, 0.0), (1.0, 0.002, 0.0), (5.0, 0.0, 0.7)],
                         ids=["cfg", "no_cfg_adaptive", "rescale"])
def test_sdxl_pag_equals_diffusers(dif, sdxl, schedule, guidance, adaptive, rescale):
    """'mid' in diffusers and m0 in the node: both depth-2 transformers of the middle block."""
    unet, model = sdxl
    pipe = D.pipeline(dif.XL_PAG, unet, pag_applied_layers="mid")
    data = inputs(1, 64, pooled=True)
    ref = diffusers_run(pipe, data, guidance, pag_scale=3.0, pag_adaptive_scale=adaptive, guidance_rescale=rescale)
    ours = comfy_run(pag_node(model, scale=3.0, adaptive_scale=adaptive, layers="m0", rescale=rescale), data, guidance, schedule)
    check(ours, ref, diffusers_run(pipe, data, guidance, pag_scale=0.0, guidance_rescale=rescale))


# ---------------------------------------------------------------- SEGA

def test_sega_equals_diffusers(dif, sd1, schedule):
    """AttnGuideSEGAConcept x2 -> AttnGuideSEGA -> ComfyUI's sampler, against
    SemanticStableDiffusionPipeline with the same tiny CLIP: staggered warmup (one in percent),
    one concept removed, unequal weights and thresholds, momentum on."""
    import tiny_clip
    from test_sega_host import sega_node, sega_nodes
    unet, model = sd1
    tok = tiny_clip.tokenizer()
    encoder = tiny_clip.text_encoder(tok)
    pipe = dif.SEGA(vae=None, text_encoder=encoder, tokenizer=tok, unet=unet, scheduler=D.ddim_scheduler(),
                    safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(5))
    edits = dict(editing_prompt=["glasses", "frog"], reverse_editing_direction=[False, True],
                 edit_guidance_scale=[5.0, 4.0], edit_warmup_steps=[1, 2], edit_threshold=[0.9, 0.8],
                 edit_weights=[1.0, 0.5], edit_momentum_scale=0.3, edit_mom_beta=0.4)

    def reference(**kw):
        with torch.no_grad():
            return pipe(prompt="a cat", latents=latents.clone(), height=128, width=128, num_inference_steps=D.STEPS,
                        guidance_scale=7.5, output_type="latent", **kw).images

    with torch.no_grad():
        embed = lambda text: [[tiny_clip.encode(tok, encoder, [text]), {}]]
        concept = sega_nodes()[0]
        stack = concept.execute(prompt="", direction="add", scale=5.0, warmup=1, cooldown=-1, timing="steps", threshold=0.9, weight=1.0, conditioning=embed("glasses")).args[0]
        stack = concept.execute(prompt="", direction="remove", scale=4.0, warmup=50, cooldown=-1, timing="percent", threshold=0.8, weight=0.5, conditioning=embed("frog"),
                                concepts=stack).args[0]
        ours = D.comfy_sample(sega_node(model, stack, 0.3, 0.4), latents, embed("a cat"), embed(""), 7.5, schedule)
    check(ours, reference(**edits), reference())
