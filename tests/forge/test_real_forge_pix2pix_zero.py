"""Pix2Pix-Zero through the Forge backend on a real Forge / reForge (FORGE_PATH / REFORGE_PATH,
see test_real_forge.py) equals the ComfyUI nodes' Inversion + Edit on the same weights and sigmas.
The sampler starts from noise: the first step hands it over to the inverted init latent."""
import comfy_host as H
import forge_host as FH
import torch
from node_runs import rel
from test_forge_pix2pix_zero import SOURCE, TARGET, embeddings, encoder, nodes_edit
from test_real_forge import STEPS, pair  # noqa: F401 (fixture)


def test_pix2pix_zero_on_forge_equals_nodes(pair):  # noqa: F811
    import comfy.sample
    import forge_double as F
    from attnguide.scripts.attnguide_webui.forge import backend as forge_backend
    comfy_model, patcher, host = pair
    pos, neg = H.conds(comfy_model, 2)
    samples = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    sigmas = F.schedule(comfy_model, STEPS)
    table = embeddings(pos[0][0].shape[-1])
    params = dict(source=SOURCE, target=TARGET, guidance_amount=20.0, lambda_auto_corr=20.0, lambda_kl=20.0,
                  regularization_steps=2, auto_corr_rolls=2, seed=3, sigmas=sigmas, encode=encoder(table),
                  init_latent=comfy_model.model.process_latent_in(samples))
    before = list(patcher.model_options.get("conditioning_modifiers", [])), patcher.model_options.get("sampler_post_cfg_function")
    patched = forge_backend.apply("pix2pix_zero", patcher, params)
    noise = comfy.sample.prepare_noise(samples, 0)
    forged = host.sample_euler(patched, noise, sigmas, FH.a1111_cond(pos, comfy_model), FH.a1111_cond(neg, comfy_model), 5.0)
    forged = comfy_model.model.process_latent_out(forged)
    ref = nodes_edit(comfy_model, pos, neg, samples, sigmas, 5.0, table)
    unguided = nodes_edit(comfy_model, pos, neg, samples, sigmas, 5.0, table, amount=0.0)
    print(f"real {type(patcher).__module__} pix2pix_zero: {rel(forged, ref):.2e}, guidance effect {rel(unguided, ref):.2e}")
    assert rel(forged, ref) <= 1e-4 and rel(unguided, ref) >= 1e-3
    unet = patcher.model.diffusion_model
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in unet.modules())
    assert not any(p.grad is not None for p in unet.parameters())
    assert patched is not patcher and (list(patcher.model_options.get("conditioning_modifiers", [])),
                                       patcher.model_options.get("sampler_post_cfg_function")) == before
