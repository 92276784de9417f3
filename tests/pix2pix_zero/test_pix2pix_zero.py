"""Pix2Pix-Zero inside a real ComfyUI (COMFYUI_PATH): the inversion and edit nodes equal
diffusers' StableDiffusionPix2PixZeroPipeline (`invert`, edit call) on the same weights,
under the executor's inference_mode; invert -> edit round trip; guidance 0 with an empty
direction reproduces the source trajectory; batch 2; the input model is left as it was;
direction save/load; maps preview; bad input."""
import types

import pytest
import torch

import comfy_host as H
import diffusers_in_comfy as D
from diffusers_fixtures import dif, pair, schedule  # noqa: F401  (fixtures)
from node_runs import rel

STEPS = D.STEPS
TOL = 1e-4
FP16_TOL = 1e-4   # reference maps held in float16 (the node's default); measured below 2e-5
EFFECT = 1e-3
AMOUNT = 100.0    # the tiny random UNet's maps barely move at 0.1 (see the reference test)


def pipeline(unet):
    from tiny_diffusers import pix2pix_zero_pipeline  # imported behind the stub by D.import_diffusers
    return pix2pix_zero_pipeline(unet)


def data(batch=1, seed=1, shape=(16, 16)):
    g = torch.Generator().manual_seed(seed)
    return types.SimpleNamespace(cond=torch.randn(batch, 77, 32, generator=g), uncond=torch.randn(batch, 77, 32, generator=g),
                                 source=torch.randn(3, 77, 32, generator=g), target=torch.randn(2, 77, 32, generator=g),
                                 latents=torch.randn(batch, 4, *shape, generator=g))


def direction(d):
    from attnguide.guidance.pix2pix_zero import edit_direction
    from attnguide.comfyui.pix2pix_zero import EditDirection
    return EditDirection(edit_direction(d.source, d.target), "test")


def empty_direction(d):
    from attnguide.comfyui.pix2pix_zero import EditDirection
    return EditDirection(torch.zeros(1, 77, d.cond.shape[-1]), "test")


def to_comfy(model, latents_vp, abar):
    """diffusers latents at alpha_cumprod abar -> a ComfyUI LATENT's samples."""
    return model.model.latent_format.process_out(latents_vp / abar ** 0.5)


def from_comfy(model, samples, abar):
    return model.model.latent_format.process_in(samples) * abar ** 0.5


def invert_node(model, cond, samples, schedule, seed=7, **kw):
    from attnguide.nodes.pix2pix_zero_invert import Pix2PixZeroInvert
    args = dict(seed=seed, lambda_auto_corr=20.0, lambda_kl=20.0, regularization_steps=5, auto_corr_rolls=5)
    args.update(kw)
    with torch.inference_mode():
        return Pix2PixZeroInvert.execute(model, [[cond, {}]], {"samples": samples}, schedule.sigmas, **args).args[0]["samples"]


def edit(model, d, samples, schedule, amount, cfg=7.5, direction_=None, sampler="euler", map_dtype=torch.float32,
         inference=True):
    import comfy.samplers
    from attnguide.comfyui.pix2pix_zero_edit import edit_latent
    with torch.inference_mode(inference):
        return edit_latent(model, [[d.cond, {}]], [[d.uncond, {}]], direction_ or direction(d), samples,
                           comfy.samplers.sampler_object(sampler), schedule.sigmas, cfg, amount, map_dtype=map_dtype)


def reference_invert(unet, d, seed=7, **kw):
    return pipeline(unet).invert(image=d.latents.clone(), prompt_embeds=d.cond, num_inference_steps=STEPS,
                                 generator=torch.Generator().manual_seed(seed), output_type="pt", **kw).latents


def reference_edit(unet, d, x_t, amount, cfg=7.5):
    with torch.no_grad():
        return pipeline(unet)(prompt_embeds=d.cond, negative_prompt_embeds=d.uncond, source_embeds=d.source,
                              target_embeds=d.target, latents=x_t.clone(), num_inference_steps=STEPS, guidance_scale=cfg,
                              cross_attention_guidance_amount=amount, height=128, width=128, output_type="latent").images


# ---------------------------------------------------------------- equal to diffusers

def test_inversion_node_equals_diffusers(pair, schedule):
    unet, model = pair
    d = data()
    ref = reference_invert(unet, d)
    plain = reference_invert(unet, d, lambda_auto_corr=0, lambda_kl=0)
    noise = invert_node(model, d.cond, to_comfy(model, d.latents, schedule.abar[-1]), schedule)
    ours = from_comfy(model, noise, schedule.abar[0])
    assert rel(plain, ref) >= EFFECT, "regularisation did not move the reference"
    assert rel(ours, ref) <= TOL


@pytest.mark.parametrize("map_dtype, tol", [(torch.float32, TOL), (torch.float16, FP16_TOL)], ids=["fp32", "fp16"])
def test_edit_node_equals_diffusers(pair, schedule, map_dtype, tol):
    unet, model = pair
    d = data(seed=2)
    ref = reference_edit(unet, d, d.latents, AMOUNT)
    unguided = reference_edit(unet, d, d.latents, 0.0)
    edited, reference, _ = edit(model, d, to_comfy(model, d.latents, schedule.abar[0]), schedule, AMOUNT,
                                map_dtype=map_dtype)
    assert rel(unguided, ref) >= EFFECT, "cross-attention guidance did not move the reference"
    assert rel(from_comfy(model, edited, schedule.abar[-1]), ref) <= tol


def test_invert_then_edit_round_trip_equals_diffusers(pair, schedule):
    unet, model = pair
    d = data(seed=3)
    x_t = reference_invert(unet, d)
    ref = reference_edit(unet, d, x_t, AMOUNT)
    noise = invert_node(model, d.cond, to_comfy(model, d.latents, schedule.abar[-1]), schedule)
    edited, reference, _ = edit(model, d, noise, schedule, AMOUNT)
    assert rel(from_comfy(model, edited, schedule.abar[-1]), ref) <= TOL
    # the reference pass from the inverted noise lands near the image it was inverted from
    back = from_comfy(model, reference, schedule.abar[-1])
    assert rel(back, d.latents) < rel(from_comfy(model, edited, schedule.abar[-1]), d.latents)


def test_batch2_each_image_as_batch1(pair, schedule):
    unet, model = pair
    d = data(batch=2, seed=4)
    edited, _, _ = edit(model, d, to_comfy(model, d.latents, schedule.abar[0]), schedule, AMOUNT)
    ours = from_comfy(model, edited, schedule.abar[-1])
    for i in range(2):
        di = types.SimpleNamespace(**{**vars(d), "cond": d.cond[i:i + 1], "uncond": d.uncond[i:i + 1]})
        assert rel(ours[i:i + 1], reference_edit(unet, di, d.latents[i:i + 1], AMOUNT)) <= TOL


# ---------------------------------------------------------------- host behaviour

def test_guidance_0_and_empty_direction_reproduce_the_source_trajectory(sd1):
    pos, neg = H.conds(sd1, batch=2)
    d = types.SimpleNamespace(cond=pos[0][0], uncond=neg[0][0])
    latent = torch.randn(2, 4, 16, 24, generator=torch.Generator().manual_seed(3))
    sigmas = _sigmas(sd1, 5)
    edited, reference, _ = edit(sd1, d, latent, types.SimpleNamespace(sigmas=sigmas), 0.0, cfg=5.0,
                                direction_=empty_direction(d))
    import comfy.sample
    import comfy.samplers
    plain = comfy.sample.sample_custom(sd1, torch.zeros_like(latent), 5.0, comfy.samplers.sampler_object("euler"),
                                       sigmas, pos, neg, latent, disable_pbar=True, seed=0)
    assert rel(edited, plain) <= 1e-5 and rel(reference, plain) <= 1e-5
    guided, _, _ = edit(sd1, d, latent, types.SimpleNamespace(sigmas=sigmas), 50.0, cfg=5.0, direction_=empty_direction(d))
    assert rel(guided, plain) <= 1e-5, "with no direction the edit's maps are the reference's: nothing to guide"


def _sigmas(model, steps):
    import comfy.samplers
    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", steps)


def test_input_model_untouched_and_no_grad(sd1):
    dm = sd1.model.diffusion_model
    before = {n: p.clone() for n, p in dm.state_dict().items()}
    options, wrappers = repr(sd1.model_options), repr(sd1.wrappers)
    dm.requires_grad_(True)
    try:
        pos, neg = H.conds(sd1)
        d = types.SimpleNamespace(cond=pos[0][0], uncond=neg[0][0], source=torch.randn(2, 77, 32), target=torch.randn(2, 77, 32))
        latent = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
        edit(sd1, d, latent, types.SimpleNamespace(sigmas=_sigmas(sd1, 3)), 10.0)
        assert all(p.grad is None for p in dm.parameters())
    finally:
        dm.requires_grad_(False)
    for n, v in dm.state_dict().items():
        assert torch.equal(v, before[n]), n
    assert (repr(sd1.model_options), repr(sd1.wrappers)) == (options, wrappers)


def test_sdxl_and_cfg_1_run_and_guidance_moves(comfy):
    model = H.tiny_sdxl()
    pos, neg = H.conds(model)
    d = types.SimpleNamespace(cond=pos[0][0], uncond=neg[0][0], source=torch.randn(2, 77, 64), target=torch.randn(2, 77, 64))
    latent = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    import comfy.samplers
    from attnguide.comfyui.pix2pix_zero_edit import edit_latent
    from attnguide.comfyui.pix2pix_zero import EditDirection
    from attnguide.guidance.pix2pix_zero import edit_direction
    dr = EditDirection(edit_direction(d.source, d.target), "test")
    sigmas = _sigmas(model, 3)
    from attnguide.comfyui.pix2pix_zero_invert import invert_latent
    from attnguide.guidance.pix2pix_zero import InversionSettings
    with torch.inference_mode():
        noise = invert_latent(model, pos, latent, sigmas, InversionSettings(), 0)
    assert noise.shape == latent.shape and torch.isfinite(noise).all() and not torch.equal(noise, latent)
    for cfg in (5.0, 1.0):
        with torch.inference_mode():
            runs = [edit_latent(model, pos, neg, dr, latent, comfy.samplers.sampler_object("euler"), sigmas, cfg, a)[0]
                    for a in (0.0, 1000.0)]
        assert torch.isfinite(runs[1]).all()
        assert rel(runs[1], runs[0]) > 1e-4, cfg


def test_maps_preview(sd1):
    from attnguide.nodes.pix2pix_zero_maps import map_images
    pos, neg = H.conds(sd1, batch=2)
    d = types.SimpleNamespace(cond=pos[0][0], uncond=neg[0][0], source=torch.randn(2, 77, 32), target=torch.randn(2, 77, 32))
    latent = torch.randn(2, 4, 16, 24, generator=torch.Generator().manual_seed(1))
    _, _, editor = edit(sd1, d, latent, types.SimpleNamespace(sigmas=_sigmas(sd1, 3)), 0.1)
    images = map_images(editor.preview, (2, 5), 8)
    assert images.shape == (4, 128, 2 * 192, 3)
    assert float(images.max()) == 1.0 and float(images.min()) >= 0.0
    left, right = images[..., :192, 0], images[..., 192:, 0]
    assert not torch.equal(left, right)   # the direction changed the attention


def test_direction_node_save_and_load(comfy, tmp_path, monkeypatch):
    import folder_paths
    from attnguide.nodes import pix2pix_zero as node
    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path))
    clip = _fake_clip(768)
    made = node.Pix2PixZeroDirection.execute(clip, "cat", "a photo of a dog.\na dog on a sofa.").args[0]
    assert made.tensor.shape == (1, 77, 768)
    assert clip.encoded.count("a photo of a cat.") == 1 and len(clip.encoded) == 16 + 2
    node.Pix2PixZeroSaveDirection.execute(made, "cat to dog")
    assert "cat_to_dog.safetensors" in folder_paths.get_filename_list(node.FOLDER)
    loaded = node.Pix2PixZeroLoadDirection.execute("cat_to_dog.safetensors").args[0]
    assert torch.equal(loaded.tensor, made.tensor) and loaded.encoder == made.encoder
    assert loaded.target == "a photo of a dog.\na dog on a sofa."


def _fake_clip(width, cls="SD1ClipModel"):
    """A CLIP whose 'encoder' maps a sentence to a fixed random embedding."""
    encoded = []

    def encode_from_tokens(tokens):
        text = tokens["text"]
        encoded.append(text)
        g = torch.Generator().manual_seed(abs(hash(text)) % 2 ** 31)
        return torch.randn(1, 77 if len(text) < 200 else 154, width, generator=g)

    model = type(cls, (), {})()
    return types.SimpleNamespace(tokenize=lambda text: {"text": text}, encode_from_tokens=encode_from_tokens,
                                 cond_stage_model=model, encoded=encoded)


@pytest.mark.parametrize("case, message", [
    ("empty_source", "source is empty"),
    ("empty_target", "target is empty"),
    ("other_encoder", "different text encoder"),
    ("long_sentence", "longer than one 75-token window"),
])
def test_direction_bad_input(comfy, case, message):
    from attnguide.nodes.pix2pix_zero import Pix2PixZeroDirection
    args = dict(clip=_fake_clip(768), source="cat", target="dog")
    if case == "empty_source":
        args["source"] = " \n "
    elif case == "empty_target":
        args["target"] = ""
    elif case == "other_encoder":
        args["target_clip"] = _fake_clip(1280, "SDXLClipModel")
    else:
        args["target"] = "a dog " * 60 + "."
    with pytest.raises(ValueError, match=message):
        Pix2PixZeroDirection.execute(**args)


def test_edit_bad_input(sd1):
    pos, neg = H.conds(sd1)
    d = types.SimpleNamespace(cond=pos[0][0], uncond=neg[0][0])
    from attnguide.comfyui.pix2pix_zero import EditDirection
    sigmas = types.SimpleNamespace(sigmas=_sigmas(sd1, 2))
    with pytest.raises(ValueError, match="has 16 channels but this model's latents have 4"):
        edit(sd1, d, torch.zeros(1, 16, 8, 8), sigmas, 0.1, direction_=empty_direction(d))
    with pytest.raises(ValueError, match="another text encoder"):
        edit(sd1, d, torch.zeros(1, 4, 8, 8), sigmas, 0.1, direction_=EditDirection(torch.zeros(1, 77, 2048), "x"))
    with pytest.raises(ValueError, match="has 16 channels"):
        invert_node(sd1, d.cond, torch.zeros(1, 16, 8, 8), sigmas)
    with pytest.raises(ValueError, match="descending schedule"):
        invert_node(sd1, d.cond, torch.zeros(1, 4, 8, 8), types.SimpleNamespace(sigmas=torch.tensor([1.0])))
    flow = sd1.clone()
    import comfy.model_sampling

    class Flow(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass
    flow.add_object_patch("model_sampling", Flow())
    with pytest.raises(ValueError, match="eps- or v-prediction model"):
        invert_node(flow, d.cond, torch.zeros(1, 4, 8, 8), sigmas)


def test_maps_node_finds_the_words_and_inversion_reports_progress(sd1):
    from test_attend_excite import _clip
    from attnguide.guidance.pix2pix_zero import InversionSettings
    from attnguide.comfyui.pix2pix_zero_invert import invert_latent
    from attnguide.nodes.pix2pix_zero_maps import Pix2PixZeroMaps
    pos, neg = H.conds(sd1)
    d = types.SimpleNamespace(cond=pos[0][0], uncond=neg[0][0], source=torch.randn(2, 77, 32), target=torch.randn(2, 77, 32))
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sigmas = _sigmas(sd1, 4)
    _, _, editor = edit(sd1, d, latent, types.SimpleNamespace(sigmas=sigmas), 0.1)
    images = Pix2PixZeroMaps.execute(editor.preview, _clip(None), "a cat and a frog", "cat, frog", 2).args[0]
    assert images.shape == (2, 16, 32, 3)
    with pytest.raises(ValueError, match="'dog' is not in the prompt"):
        Pix2PixZeroMaps.execute(editor.preview, _clip(None), "a cat and a frog", "dog", 2)
    seen = []
    with torch.inference_mode():
        invert_latent(sd1, pos, latent, sigmas, InversionSettings(), 0, callback=lambda i, x0, x, total: seen.append((i, total)))
    assert seen == [(i, 4) for i in range(4)]
