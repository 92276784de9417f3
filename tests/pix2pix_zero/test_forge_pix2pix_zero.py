"""Pix2Pix-Zero through the Forge backend (ComfyUI standing in for ldm_patched, sampled the
Forge way) equals the ComfyUI nodes' composition: Pix2Pix-Zero Inversion of the init latent,
then Pix2Pix-Zero Edit from it with Euler on the same sigmas."""
import pytest
import torch

import comfy_host as H
from node_runs import rel

STEPS = 4
AMOUNT = 20.0   # the tiny random UNet's maps barely move at the default 0.1
SOURCE, TARGET = "a cat.\na small cat.\na cat outdoors.", "a dog.\na small dog."


def embeddings(dim):
    g = torch.Generator().manual_seed(5)
    return {t: torch.randn(77, dim, generator=g) for t in (SOURCE + "\n" + TARGET).splitlines()}


def encoder(table):
    return lambda texts: torch.stack([table[t] for t in texts])


def nodes_edit(model, pos, neg, samples, sigmas, cfg, table, amount=AMOUNT):
    import comfy.samplers
    from attnguide.guidance.pix2pix_zero import InversionSettings, edit_direction
    from attnguide.comfyui.pix2pix_zero import EditDirection
    from attnguide.comfyui.pix2pix_zero_edit import edit_latent
    from attnguide.comfyui.pix2pix_zero_invert import invert_latent
    noise = invert_latent(model, pos, samples, sigmas, InversionSettings(20.0, 20.0, 2, 2), 3)
    direction = EditDirection(edit_direction(torch.stack([table[t] for t in SOURCE.splitlines()]),
                                             torch.stack([table[t] for t in TARGET.splitlines()])), "test")
    edited, _, _ = edit_latent(model, pos, neg, direction, noise, comfy.samplers.sampler_object("euler"), sigmas, cfg,
                               amount)
    return edited


def forge_edit(model, pos, neg, samples, sigmas, cfg, table, amount=AMOUNT, **extra):
    import forge_double as F
    from attnguide.scripts.attnguide_webui.forge import backend as forge_backend
    old = F.old_patcher(model)
    params = dict(source=SOURCE, target=TARGET, guidance_amount=amount, lambda_auto_corr=20.0, lambda_kl=20.0,
                  regularization_steps=2, auto_corr_rolls=2, seed=3, sigmas=sigmas, encode=encoder(table),
                  init_latent=model.model.process_latent_in(samples), **extra)
    patched = forge_backend.apply("pix2pix_zero", old, params)
    with F.forge_sampling():
        out = H.sample(patched, pos, neg, samples, steps=STEPS, cfg=cfg, sampler="euler", sigmas=sigmas, seed=11)
    return out, old, patched


@pytest.mark.parametrize("batch, cfg", [(1, 7.5), (2, 5.0)])
def test_equals_nodes(sd1, batch, cfg):
    import forge_double as F
    pos, neg = H.conds(sd1, batch)
    samples = torch.randn(batch, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    sigmas = F.schedule(sd1, STEPS)
    table = embeddings(pos[0][0].shape[-1])
    ref = nodes_edit(sd1, pos, neg, samples, sigmas, cfg, table)
    ours, old, patched = forge_edit(sd1, pos, neg, samples, sigmas, cfg, table)
    unguided = nodes_edit(sd1, pos, neg, samples, sigmas, cfg, table, amount=0.0)
    plain = H.sample(sd1, pos, neg, samples, steps=STEPS, cfg=cfg, sampler="euler", sigmas=sigmas, seed=11)
    print(f"forge pix2pix_zero batch {batch}: {rel(ours, ref):.2e}, guidance effect {rel(unguided, ref):.2e}")
    assert rel(ours, ref) <= 1e-4
    assert rel(unguided, ref) >= 1e-3 and rel(plain, ref) >= 1e-3
    assert "conditioning_modifiers" not in old.model_options and not old.model_options.get("sampler_post_cfg_function")
    assert all(p.grad is None for p in sd1.model.parameters())


def test_bad_input_is_said(sd1):
    import forge_double as F
    from attnguide.scripts.attnguide_webui.forge import backend as forge_backend
    old = F.old_patcher(sd1)
    table = embeddings(32)
    base = dict(sigmas=F.schedule(sd1, STEPS), encode=encoder(table), init_latent=torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match="source is empty"):
        forge_backend.apply("pix2pix_zero", old, {**base, "source": " "})
    with pytest.raises(ValueError, match="off in txt2img"):
        forge_backend.apply("pix2pix_zero", old, {**base, "init_latent": None})
    table["a horse."] = torch.randn(77, 40)
    with pytest.raises(ValueError, match="different text encoders"):
        forge_backend.apply("pix2pix_zero", old, {**base, "target": "a horse.", "source": SOURCE})
    with pytest.raises(ValueError, match="unknown parameter"):
        forge_backend.apply("pix2pix_zero", old, {**base, "caption": "x"})


def test_refused_together_with_the_panorama(sd1):
    """It inverts and edits the whole latent; the panorama evaluates windows: either order says so."""
    import forge_double as F
    from attnguide.scripts.attnguide_webui.forge import backend as forge_backend
    old = F.old_patcher(sd1)
    pos, _ = H.conds(sd1, 1)
    p2pz = dict(source=SOURCE, target=TARGET, sigmas=F.schedule(sd1, STEPS), init_latent=torch.zeros(1, 4, 16, 16),
                encode=encoder(embeddings(pos[0][0].shape[-1])))
    pano = dict(window_width=64, window_height=64, stride=32)
    with pytest.raises(ValueError, match="cannot run together with the panorama"):
        forge_backend.apply("pix2pix_zero", forge_backend.apply("panorama", old, pano), p2pz)
    with pytest.raises(ValueError, match="Panorama: Pix2Pix-Zero cannot run together with the panorama"):
        forge_backend.apply("panorama", forge_backend.apply("pix2pix_zero", old, p2pz), pano)
