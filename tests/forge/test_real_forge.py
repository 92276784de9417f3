"""The Forge backend on a real Forge (FORGE_PATH; tests/support/forge_host.py: Forge's UNet, KModel,
UnetPatcher and sampling functions) and a real reForge (REFORGE_PATH; tests/support/reforge_host.py:
its ldm_patched model, UnetPatcher and sampling_function), each with a ComfyUI tiny model's
weights: the result must equal the ComfyUI nodes on the same weights, noise and sigmas
(COMFYUI_PATH too)."""
import pytest
import torch

import comfy_host as H
import forge_host as FH
import reforge_host as RH
from node_runs import pag_node, rel, sag_node
from test_forge_sega import build, sega_node

STEPS = 5


@pytest.fixture(scope="module", params=["forge-sd1", "forge-sdxl", "reforge-sd1", "reforge-sdxl"])
def pair(request, comfy):
    host, kind = request.param.split("-")
    (FH.require_forge if host == "forge" else RH.require_reforge)()
    comfy_model = {"sd1": H.tiny_sd1, "sdxl": H.tiny_sdxl}[kind]()
    config = dict(H.SD1_UNET if kind == "sd1" else H.SDXL_UNET)
    if host == "forge":
        return comfy_model, FH.unet_patcher(comfy_model, {**config, "num_head_channels": 16} if kind == "sdxl" else config), FH
    return comfy_model, RH.unet_patcher(comfy_model, kind, config), RH


def apply(method, patcher, sigmas, **params):
    from attnguide.scripts.attnguide_webui.forge import backend as forge_backend
    return forge_backend.apply(method, patcher, {**params, "sigmas": sigmas})


def both(pair, forge_patch, comfy_patch, cfg=5.0, batch=1, shape=(16, 16)):
    """(Forge run with the backend, ComfyUI run with the nodes, ComfyUI run without)."""
    import comfy.sample
    import forge_double as F
    comfy_model, patcher, host = pair
    pos, neg = H.conds(comfy_model, batch)
    latent = torch.zeros(batch, 4, *shape)
    sigmas = F.schedule(comfy_model, STEPS)
    noise = comfy.sample.prepare_noise(latent, 0)
    forged = host.sample_euler(forge_patch(patcher, sigmas), noise, sigmas, FH.a1111_cond(pos, comfy_model),
                             FH.a1111_cond(neg, comfy_model), cfg)
    forged = comfy_model.model.process_latent_out(forged)
    sample = lambda m: H.sample(m, pos, neg, latent, steps=STEPS, cfg=cfg)
    return forged, sample(comfy_patch(comfy_model)), sample(comfy_model)


def test_plain_forge_equals_plain_comfyui(pair):
    forged, _, plain = both(pair, lambda p, s: p, lambda m: m)
    assert rel(forged, plain) <= 1e-5


def test_sag_on_forge_equals_node(pair):
    forged, ref, plain = both(pair, lambda p, s: apply("sag", p, s), sag_node)
    assert rel(forged, ref) <= 1e-5
    assert rel(plain, ref) >= 1e-3


def test_pag_on_forge_equals_node(pair):
    forged, ref, plain = both(pair, lambda p, s: apply("pag", p, s, adaptive_scale=0.002, rescale=0.5),
                              lambda m: pag_node(m, adaptive_scale=0.002, rescale=0.5))
    assert rel(forged, ref) <= 1e-5
    assert rel(plain, ref) >= 1e-3


@pytest.mark.parametrize("cfg", [1.0, 5.0])
def test_sega_sag_pag_stacked_on_forge_equal_nodes(pair, cfg):
    comfy_model = pair[0]
    stack, dicts = build(comfy_model)
    forge_patch = lambda p, s: apply("sag", apply("sega", apply("pag", p, s), s, concepts=dicts, momentum_scale=0.3), s)
    comfy_patch = lambda m: sag_node(sega_node(pag_node(m), stack))
    forged, ref, plain = both(pair, forge_patch, comfy_patch, cfg=cfg, batch=2, shape=(13, 19))
    assert rel(forged, ref) <= 1e-5
    assert rel(plain, ref) >= 1e-3


def test_panorama_with_pag_on_forge_equals_nodes(pair):
    from test_forge_panorama import panorama_node
    params = dict(window_width=128, window_height=128, stride=64, wrap="horizontal", weights="feathered", window_batch=3)
    forge_patch = lambda p, s: apply("panorama", apply("pag", p, s), s, **params)
    comfy_patch = lambda m: panorama_node(pag_node(m), weights="feathered", batch=3)
    forged, ref, plain = both(pair, forge_patch, comfy_patch, shape=(16, 40))
    assert rel(forged, ref) <= 1e-5
    assert rel(plain, ref) >= 1e-3


def test_attend_excite_with_pag_on_forge_equals_nodes(pair):
    from test_forge_attend_excite import ARGS, excite_node
    args = {**ARGS, "attention_downscale": 2}
    forge_patch = lambda p, s: apply("pag", apply("attend_excite", p, s, **args), s, rescale=0.7)
    comfy_patch = lambda m: pag_node(excite_node(m, attention_downscale=2), rescale=0.7)
    forged, ref, plain = both(pair, forge_patch, comfy_patch, batch=2)
    assert rel(forged, ref) <= 1e-5
    assert rel(plain, ref) >= 1e-3
    unet = pair[1].model.diffusion_model
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in unet.modules())  # Forge's norm copies are gone
    assert not any(p.grad is not None for p in unet.parameters())


def test_forge_input_patcher_untouched(pair):
    patcher = pair[1]
    before = dict(patcher.model_options), dict(patcher.model_options["transformer_options"])
    patched = apply("pag", apply("sag", patcher, None), None)
    assert type(patched) is type(patcher) and patched is not patcher
    assert type(patched).__module__ in ("backend.patcher.unet", "modules_forge.unet_patcher")
    assert (dict(patcher.model_options), dict(patcher.model_options["transformer_options"])) == before


def test_panorama_with_sag_and_attend_excite_on_forge_equals_nodes(pair):
    """Each window batch is one whole evaluation through the host's own sampling_function_inner (Forge) or
    samplers.sampling_function (reForge): Attend-and-Excite moves and SAG guides every window on its own."""
    from test_forge_attend_excite import ARGS, excite_node
    from test_forge_panorama import panorama_node
    args = {**ARGS, "attention_downscale": 2}
    params = dict(window_width=128, window_height=128, stride=64, wrap="none", weights="uniform", window_batch=2)
    forge_patch = lambda p, s: apply("sag", apply("panorama", apply("attend_excite", p, s, **args), s, **params), s)
    comfy_patch = lambda m: sag_node(panorama_node(excite_node(m, attention_downscale=2), wrap="none", batch=2))
    forged, ref, plain = both(pair, forge_patch, comfy_patch, shape=(16, 24))
    assert rel(forged, ref) <= 1e-5
    assert rel(plain, ref) >= 1e-3
