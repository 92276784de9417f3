"""PAG on Flux-, SD3- and Qwen-Image-shaped transformers inside a real ComfyUI (COMFYUI_PATH) against diffusers on
the same weights: the model-agnostic PAG guider (Flux, Qwen-Image) and StableDiffusion3PAGPipeline (SD3, below).

A tiny diffusers FluxTransformer2DModel is built (random), its state dict converted with ComfyUI's own
key map (comfy.model_detection.convert_diffusers_mmdit) and loaded strictly into ComfyUI's Flux. The
reference samples with Euler on the same sigmas (x += (s' - s) v), starting from the same noise at
sigma 1 (ComfyUI's flow noise scaling then ignores the latent), with the diffusers transformer on packed
2x2 patches; ComfyUI samples with its own "euler" and the pack's PAG node; its result is taken back to
model space with the model's process_latent_in.

The reference's perturbation is diffusers.guiders.PerturbedAttentionGuidance with
LayerSkipConfig(skip_attention_scores=True): AttentionScoreSkipFunctionMode makes every attention of
the chosen block return its value input. In diffusers 0.42.1 the guider stops on Flux with
"'FluxAttention' object has no attribute 'is_cross_attention'"; the test gives those modules
is_cross_attention = False (what they are) and changes nothing else. Its guidance is the guider's own
forward(): with CFG, uncond + cfg (cond - uncond) + s (cond - perturbed); at CFG 1 (Flux.1-dev,
guidance-distilled) use_original_formulation=True gives the paper's cond + s (cond - perturbed)
(its default formulation would be perturbed + s (cond - perturbed)). The guider's window is
start_step < step < stop_step: start 0.0 leaves out step 0, which the node's start_percent 0.25 of 4
steps does too. A second reference bug: the guider puts its skip hooks on the third batch it prepares
(is_conditional: count 1 or 3), so without CFG (two batches: cond, cond_skip) its "perturbed" pass is the
plain conditional pass and PAG does nothing; the reference here prepares the perturbed pass as the third.
"""
import importlib.util
import inspect

import pytest
import torch

import comfy_host as H
from node_runs import pag_node, rel

STEPS = 4
SIGMAS = torch.linspace(1.0, 0.0, STEPS + 1)
TOL, EFFECT = 1e-4, 1e-3
B, LAT_H, LAT_W, TEXT = 2, 8, 12, 7


def _diffusers():
    H.require_comfy()
    if importlib.util.find_spec("diffusers") is None:
        pytest.skip("diffusers is not installed in ComfyUI's Python: `pip install diffusers` to run the comparison")
    import diffusers
    return diffusers


@pytest.fixture(scope="module", params=[False, True], ids=["flux-schnell-like", "flux-dev-like"])
def flux_pair(request):
    return build_pair(request.param)


def build_pair(guidance):
    """(diffusers transformer, ComfyUI ModelPatcher, guidance embedded?)"""
    diffusers = _diffusers()
    import comfy.ldm.flux.model as flux_model
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.supported_models as sm
    torch.manual_seed(0)
    tr = diffusers.FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=3,
                                          attention_head_dim=32, num_attention_heads=2, joint_attention_dim=32,
                                          pooled_projection_dim=32, guidance_embeds=guidance,
                                          axes_dims_rope=(8, 12, 12)).eval()
    with torch.no_grad():
        for p in tr.parameters():
            p.normal_(0, 0.05)  # every layer matters, zero-initialised ones too
    for module in tr.modules():
        if type(module).__name__ == "FluxAttention" and not hasattr(module, "is_cross_attention"):
            module.is_cross_attention = False
    converted = comfy.model_detection.convert_diffusers_mmdit({k: v.clone() for k, v in tr.state_dict().items()}, "")
    newer = {"txt_ids_dims": []} if "txt_ids_dims" in inspect.signature(flux_model.FluxParams).parameters else {}
    config = sm.Flux({**newer, "image_model": "flux", "in_channels": 16, "patch_size": 2, "out_channels": 16,
                      "vec_in_dim": 32, "context_in_dim": 32, "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2,
                      "depth": 2, "depth_single_blocks": 3, "axes_dim": [8, 12, 12], "theta": 10000,
                      "qkv_bias": True, "guidance_embed": guidance})
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    model.diffusion_model.load_state_dict(converted, strict=True)
    return tr, comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu")), guidance


def _inputs(guidance):
    g = torch.Generator().manual_seed(5)
    pos, neg = [(torch.randn(B, TEXT, 32, generator=g) * 3, torch.randn(B, 32, generator=g)) for _ in range(2)]
    return torch.randn(B, 16, LAT_H, LAT_W, generator=g), pos, neg, 3.5 if guidance else None


def _velocity(tr, x, text, pooled, sigma, guidance):
    h, w = LAT_H // 2, LAT_W // 2
    packed = x.reshape(B, 16, h, 2, w, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, h * w, 64)
    ids = torch.zeros(h, w, 3)
    ids[..., 1], ids[..., 2] = torch.arange(h)[:, None], torch.arange(w)[None]
    extra = {"guidance": torch.full((B,), guidance)} if guidance is not None else {}
    out = tr(hidden_states=packed, encoder_hidden_states=text, pooled_projections=pooled,
             timestep=torch.full((B,), float(sigma)), img_ids=ids.reshape(-1, 3), txt_ids=torch.zeros(TEXT, 3),
             return_dict=False, **extra)[0]
    return out.reshape(B, h, w, 16, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(B, 16, LAT_H, LAT_W)


def reference(tr, data, cfg, pag_scale=0.0, fqn=None, index=None, velocity=_velocity):
    """Euler in sigma with diffusers' PAG guider (pag_scale 0: plain CFG through the same guider)."""
    from diffusers.guiders import PerturbedAttentionGuidance
    from diffusers.hooks import LayerSkipConfig
    noise, (text, pooled), (neg_text, neg_pooled), guidance = data
    layer = LayerSkipConfig(indices=[index if index is not None else 0], fqn=fqn or "transformer_blocks",
                            skip_attention=False, skip_attention_scores=True, skip_ff=False)
    guider = PerturbedAttentionGuidance(guidance_scale=cfg if cfg > 1 else 0.0, perturbed_guidance_scale=pag_scale,
                                        perturbed_guidance_start=0.0, perturbed_guidance_stop=1.0,
                                        perturbed_guidance_config=layer, use_original_formulation=cfg <= 1)
    x = noise.clone()
    with torch.no_grad():
        for i in range(STEPS):
            s, s_next = SIGMAS[i], SIGMAS[i + 1]
            guider.set_state(i, STEPS, torch.tensor(1000.0 * float(s)))
            guider._count_prepared = 0
            preds = {}
            names = ["pred_cond"] + (["pred_uncond"] if cfg > 1 else []) + \
                (["pred_cond_skip"] if guider._is_slg_enabled() else [])
            for name in names:
                if name == "pred_cond_skip":
                    guider._count_prepared = 2  # the guider's skip hooks go on its third batch only (see above)
                guider.prepare_models(tr)
                t, p = (neg_text, neg_pooled) if name == "pred_uncond" else (text, pooled)
                preds[name] = velocity(tr, x, t, p, s, guidance)
                guider.cleanup_models(tr)
            x = x + (s_next - s) * guider.forward(**preds).pred
    return x


def comfy(model, data, cfg):
    import comfy.sample
    import comfy.samplers
    noise, (text, pooled), (neg_text, neg_pooled), guidance = data
    extra = {"guidance": guidance} if guidance is not None else {}
    pos = [[text, {"pooled_output": pooled, **extra}]]
    neg = [[neg_text, {"pooled_output": neg_pooled, **extra}]]
    out = comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.sampler_object("euler"), SIGMAS, pos, neg,
                                     torch.zeros_like(noise), disable_pbar=True, seed=0)
    return model.model.process_latent_in(out)


@pytest.mark.parametrize("cfg", [3.0, 1.0])
def test_plain_sampling_agrees(flux_pair, cfg):
    tr, model, guidance = flux_pair
    data = _inputs(guidance)
    assert rel(comfy(model, data, cfg), reference(tr, data, cfg)) <= TOL


@pytest.mark.parametrize("cfg", [3.0, 1.0])
@pytest.mark.parametrize("layer, fqn, index", [("j1", "transformer_blocks", 1), ("s0", "single_transformer_blocks", 0),
                                               ("s2", "single_transformer_blocks", 2)])
def test_pag_equals_the_diffusers_guider(flux_pair, cfg, layer, fqn, index):
    tr, model, guidance = flux_pair
    data = _inputs(guidance)
    ref = reference(tr, data, cfg, 3.0, fqn, index)
    ours = comfy(pag_node(model, scale=3.0, layers=layer, start_percent=0.25), data, cfg)
    off = reference(tr, data, cfg)
    diff, effect = rel(ours, ref), rel(off, ref)
    assert diff <= TOL, f"ComfyUI PAG vs diffusers' guider: {diff:.2e} (PAG's effect {effect:.2e})"
    assert effect >= EFFECT


# ------------------------------------------------------------------ SD3-shaped, against StableDiffusion3PAGPipeline
# The pipeline's PAG processors (PAGCFGJointAttnProcessor2_0, PAGJointAttnProcessor2_0 in 0.42.1) never
# apply the attention's norm_q/norm_k, on the perturbed rows nor on the others: on SD3.5 (RMS q/k norms)
# the reference computes the layers it perturbs without their norms, a bug the pack does not copy. The
# comparison therefore runs on an SD3-shaped model (no q/k norms, as SD3 Medium); SD3.5-shaped PAG is
# checked in tests/dit/test_dit_methods.py (effect, shared blocks) and by test_sd35_pag_keeps_the_norms.

def _sd3_pair(qk_norm):
    """(diffusers SD3 transformer, ComfyUI ModelPatcher), 2 joint blocks."""
    diffusers = _diffusers()
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.supported_models as sm
    torch.manual_seed(0)
    tr = diffusers.SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=16, num_layers=2,
                                         attention_head_dim=64, num_attention_heads=2, joint_attention_dim=32,
                                         caption_projection_dim=128, pooled_projection_dim=32, out_channels=16,
                                         pos_embed_max_size=64, qk_norm="rms_norm" if qk_norm else None).eval()
    with torch.no_grad():
        for p in tr.parameters():
            p.normal_(0, 0.05)
    converted = comfy.model_detection.convert_diffusers_mmdit({k: v.clone() for k, v in tr.state_dict().items()}, "")
    config = sm.SD3({"in_channels": 16, "pos_embed_scaling_factor": None, "patch_size": 2, "depth": 2,
                     "num_patches": 64 * 64, "pos_embed_max_size": 64, "adm_in_channels": 32,
                     **({"qk_norm": "rms"} if qk_norm else {}),
                     "context_embedder_config": {"target": "torch.nn.Linear",
                                                 "params": {"in_features": 32, "out_features": 128}},
                     "out_channels": 16})
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    model.diffusion_model.load_state_dict(converted, strict=True)
    return tr, comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))


@pytest.fixture(scope="module")
def sd3_pair():
    return _sd3_pair(False)


def sd3_reference(tr, data, cfg, pag_scale=0.0, layers=("blocks.1",)):
    """StableDiffusion3PAGPipeline (or StableDiffusion3Pipeline without PAG) on the same sigmas."""
    import diffusers
    noise, (text, pooled), (neg_text, neg_pooled), _ = data
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0)
    common = dict(transformer=tr, scheduler=scheduler, vae=None, text_encoder=None, tokenizer=None,
                  text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
    if pag_scale:
        pipe = diffusers.StableDiffusion3PAGPipeline(**common, pag_applied_layers=list(layers))
        extra = {"pag_scale": pag_scale, "pag_adaptive_scale": 0.0}
    else:
        pipe = diffusers.StableDiffusion3Pipeline(**common)
        extra = {}
    pipe.set_progress_bar_config(disable=True)
    negatives = {"negative_prompt_embeds": neg_text, "negative_pooled_prompt_embeds": neg_pooled} if cfg > 1 else {}
    with torch.no_grad():
        return pipe(prompt_embeds=text, pooled_prompt_embeds=pooled, **negatives, latents=noise.clone(),
                    height=8 * LAT_H, width=8 * LAT_W, sigmas=SIGMAS[:-1].tolist(), guidance_scale=cfg,
                    output_type="latent", **extra).images


@pytest.mark.parametrize("cfg", [3.0, 1.0])
def test_sd3_plain_sampling_agrees(sd3_pair, cfg):
    tr, model = sd3_pair
    data = _inputs(False)
    assert rel(comfy(model, data, cfg), sd3_reference(tr, data, cfg)) <= TOL


@pytest.mark.parametrize("cfg", [3.0, 1.0])
@pytest.mark.parametrize("layers, reference_layers", [("auto", ("blocks.1",)), ("j0", ("blocks.0",)),
                                                      ("j0-1", ("blocks.0", "blocks.1"))])
def test_sd3_pag_equals_stable_diffusion_3_pag_pipeline(sd3_pair, cfg, layers, reference_layers):
    tr, model = sd3_pair
    data = _inputs(False)
    ref = sd3_reference(tr, data, cfg, 3.0, reference_layers)
    ours = comfy(pag_node(model, scale=3.0, layers=layers), data, cfg)
    off = sd3_reference(tr, data, cfg)
    diff, effect = rel(ours, ref), rel(off, ref)
    assert diff <= TOL, f"ComfyUI PAG vs StableDiffusion3PAGPipeline: {diff:.2e} (PAG's effect {effect:.2e})"
    assert effect >= EFFECT


def test_sd35_pag_keeps_the_norms():
    """On an SD3.5-shaped model plain sampling still agrees, PAG moves the result, and the pack's PAG is
    not the pipeline's (whose perturbed layers run without their q/k norms)."""
    tr, model = _sd3_pair(True)
    data = _inputs(False)
    assert rel(comfy(model, data, 3.0), sd3_reference(tr, data, 3.0)) <= TOL  # plain sampling agrees
    ours = comfy(pag_node(model, scale=3.0, layers="j1"), data, 3.0)
    off = sd3_reference(tr, data, 3.0)
    assert rel(ours, off) >= EFFECT
    assert rel(ours, sd3_reference(tr, data, 3.0, 3.0)) > 10 * TOL  # the reference's norm-less layers


# ------------------------------------------------------------------ Qwen-Image-shaped, against the PAG guider

@pytest.fixture(scope="module")
def qwen_pair():
    """(diffusers QwenImageTransformer2DModel, ComfyUI ModelPatcher): ComfyUI's Qwen-Image keeps diffusers'
    key names, so the state dict loads as it is."""
    diffusers = _diffusers()
    import comfy.model_patcher
    import comfy.supported_models as sm
    torch.manual_seed(0)
    tr = diffusers.QwenImageTransformer2DModel(patch_size=2, in_channels=64, out_channels=16, num_layers=3,
                                               attention_head_dim=32, num_attention_heads=2, joint_attention_dim=32,
                                               axes_dims_rope=(8, 12, 12)).eval()
    with torch.no_grad():
        for p in tr.parameters():
            p.normal_(0, 0.05)
    config = sm.QwenImage({"image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16,
                           "num_layers": 3, "attention_head_dim": 32, "num_attention_heads": 2,
                           "joint_attention_dim": 32, "axes_dims_rope": (8, 12, 12)})
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    model.diffusion_model.load_state_dict(tr.state_dict(), strict=True)
    return tr, comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))


def _qwen_velocity(tr, x, text, pooled, sigma, guidance):
    h, w = LAT_H // 2, LAT_W // 2
    packed = x.reshape(B, 16, h, 2, w, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, h * w, 64)
    out = tr(hidden_states=packed, encoder_hidden_states=text, encoder_hidden_states_mask=torch.ones(B, TEXT),
             timestep=torch.full((B,), float(sigma)), img_shapes=[(1, h, w)] * B, return_dict=False)[0]
    return out.reshape(B, h, w, 16, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(B, 16, LAT_H, LAT_W)


def qwen_comfy(model, data, cfg):
    """ComfyUI's Qwen-Image latents have a frame axis: (B, 16, 1, H, W)."""
    noise, pos, neg, guidance = data
    return comfy(model, (noise[:, :, None], pos, neg, guidance), cfg)[:, :, 0]


@pytest.mark.parametrize("cfg", [3.0, 1.0])
def test_qwen_image_plain_sampling_agrees(qwen_pair, cfg):
    tr, model = qwen_pair
    data = _inputs(False)
    assert rel(qwen_comfy(model, data, cfg), reference(tr, data, cfg, velocity=_qwen_velocity)) <= TOL


@pytest.mark.parametrize("cfg", [3.0, 1.0])
@pytest.mark.parametrize("layer, index", [("auto", 1), ("j2", 2)])
def test_qwen_image_pag_equals_the_diffusers_guider(qwen_pair, cfg, layer, index):
    tr, model = qwen_pair
    data = _inputs(False)
    ref = reference(tr, data, cfg, 3.0, "transformer_blocks", index, velocity=_qwen_velocity)
    ours = qwen_comfy(pag_node(model, scale=3.0, layers=layer, start_percent=0.25), data, cfg)
    off = reference(tr, data, cfg, velocity=_qwen_velocity)
    diff, effect = rel(ours, ref), rel(off, ref)
    assert diff <= TOL, f"ComfyUI PAG vs diffusers' guider: {diff:.2e} (PAG's effect {effect:.2e})"
    assert effect >= EFFECT
