"""attnguide's SAG and PAG against diffusers' pipelines, on tiny random models with the same noise.

The reference is diffusers' StableDiffusionSAGPipeline / StableDiffusionPAGPipeline /
StableDiffusionXLPAGPipeline (DDIM or Euler, latents out). Our side is the sigma-space host of
sigma_host.py: Euler on the same sigmas, attention through attnguide's Router, the methods from attnguide's own
builds (methods/sag.py, methods/pag.py: the router Method and post-CFG every host installs). Each case asserts
  * equality: max |ours - reference| / max |reference| <= 1e-4, and
  * that the method matters: the reference with the method moves by >= 1e-3 (same measure)
    against the reference without it, so equality is not trivially met.
"""
import pytest
import torch

pytest.importorskip("diffusers", reason="the reference tests need diffusers (requirements-test.txt)")

from attnguide.attention.layers import parse_layers
from attnguide.attention.router import Router
from attnguide.methods import pag, sag
from attnguide.methods.args_step import ArgsStep
from attnguide.methods.build import Target

import tiny_diffusers as td
from sigma_host import Cond, SigmaHost, ddim_schedule, euler_schedule, host_layers

TOLERANCE = 1e-4
MIN_EFFECT = 1e-3
STEPS = 4
TOKENS = 8

pytestmark = pytest.mark.filterwarnings("ignore")


# --- the methods, from attnguide's own builds (methods/sag.py, methods/pag.py), as every host installs them ---

def defaults(method):
    return {p.name: p.default for p in method.SPEC.params}


def _post(built):
    def run_extra(args, conds, x):
        return args["host"].extra(x, args["sigma"], args["timestep"], conds, args["ctx"])

    def timestep(args):
        return torch.as_tensor(args["timestep"], dtype=torch.float32).reshape(1)

    def warn(ctx, message):
        raise AssertionError(message)

    return lambda args: built.post_cfg(ArgsStep(args, args["ctx"], run_extra, timestep, warn))


def sag_method(layer, scale, blur_sigma=1.0, threshold=1.0, key="sag.0"):
    built = sag.build(Target(key, "unet", (layer,)), **{**defaults(sag), "scale": scale, "blur_sigma": blur_sigma,
                                                        "threshold": threshold, "layer": str(layer)})
    post = _post(built)

    def post_cfg(args):
        captured = args["ctx"].captures[key]
        assert all(rows.shape[0] == args["input"].shape[0] for rows, _ in captured.values()), \
            "the capture saw other rows than the guided branch"
        return post(args)

    return built.method, post_cfg


def pag_method(layers, scale, adaptive_scale=0.0, rescale=0.0, key="pag.0"):
    built = pag.build(Target(key, "unet", tuple(layers)), **{**defaults(pag), "scale": scale, "adaptive_scale": adaptive_scale,
                                                             "layers": ",".join(map(str, layers)), "rescale": rescale})
    return built.method, _post(built)


def run_host(unet, schedule, noise, cond, uncond, cfg, method=None):
    router, post = Router(), ()
    if method is not None:
        router, post = router.with_method(method[0]), (method[1],)
    host = SigmaHost(unet, router)
    with torch.no_grad():
        out = host.sample(noise, schedule, cond, uncond, cfg, post)
    return out, host


def check(name, ours, reference, reference_off):
    diff = td.relative(ours, reference)
    effect = td.relative(reference, reference_off)
    print(f"{name}: relative difference {diff:.2e}, guidance effect {effect:.2e}")
    assert diff <= TOLERANCE, f"{name}: ours differs from diffusers by {diff:.3g} (relative)"
    assert effect >= MIN_EFFECT, f"{name}: the method barely moves the reference ({effect:.3g}); the test is too weak"


@pytest.fixture(scope="module")
def sd1_diffusers():
    unet = td.sd1_unet(seed=0)
    return unet, td.sag_pipeline(unet), {}


def _inputs(batch, height, width, context_dim, seed=1):
    noise = td.randn((batch, 4, height // 8, width // 8), seed)
    return noise, td.randn((batch, TOKENS, context_dim), seed + 1), td.randn((batch, TOKENS, context_dim), seed + 2)


# --- sanity: the host itself is diffusers' sampler ---------------------------------------------------

@pytest.mark.parametrize("cfg", [7.5, 1.0])
def test_host_without_methods_is_ddim(sd1_diffusers, cfg):
    unet, pipe, _ = sd1_diffusers
    noise, pe, ne = _inputs(1, 128, 128, td.SD1_CONTEXT_DIM)
    with torch.no_grad():
        ref = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, latents=noise, height=128, width=128,
                   num_inference_steps=STEPS, guidance_scale=cfg, sag_scale=0.0, output_type="latent").images
    ours, host = run_host(unet, ddim_schedule(td.ddim(), STEPS), noise, Cond(pe), Cond(ne), cfg)
    assert host.attn_calls == 0 and host.model_calls == [2 if cfg > 1 else 1] * STEPS
    assert td.relative(ours, ref) <= TOLERANCE


# --- SAG ------------------------------------------------------------------------------------------------

SAG_CASES = {
    "cfg": dict(cfg=7.5, scale=0.75, batch=1, height=128, width=128),
    "no_cfg": dict(cfg=1.0, scale=0.75, batch=1, height=128, width=128),
    # 17x25 latent: the mid grid is 9x13 (odd sizes round up), as diffusers' forward hook reports it
    "cfg_non_square_odd": dict(cfg=7.5, scale=0.75, batch=1, height=136, width=200),
    "cfg_batch2": dict(cfg=7.5, scale=0.75, batch=2, height=128, width=128),
    "no_cfg_batch2_non_square": dict(cfg=1.0, scale=0.75, batch=2, height=192, width=128),
}


@pytest.mark.parametrize("case", SAG_CASES)
def test_sag_matches_diffusers(sd1_diffusers, case):
    unet, pipe, _ = sd1_diffusers
    c = SAG_CASES[case]
    noise, pe, ne = _inputs(c["batch"], c["height"], c["width"], td.SD1_CONTEXT_DIM)

    def reference(scale):
        with torch.no_grad():
            return pipe(prompt_embeds=pe, negative_prompt_embeds=ne, latents=noise, height=c["height"],
                        width=c["width"], num_inference_steps=STEPS, guidance_scale=c["cfg"], sag_scale=scale,
                        output_type="latent").images

    # diffusers' SAG reads mid_block.attentions[0].transformer_blocks[0].attn1: ComfyUI's m0.0
    layer, = parse_layers("m0.0", host_layers(unet))
    ours, host = run_host(unet, ddim_schedule(td.ddim(), STEPS), noise, Cond(pe), Cond(ne), c["cfg"],
                          sag_method(layer, c["scale"]))
    # per step: the main call (b or 2b rows) and the extra degraded call (b rows)
    main = c["batch"] * (2 if c["cfg"] > 1 else 1)
    assert host.model_calls == [main, c["batch"]] * STEPS
    check(f"sag_{case}", ours, reference(c["scale"]), reference(0.0))


# --- PAG (SD1) ------------------------------------------------------------------------------------------

PAG_CASES = {
    "cfg": dict(cfg=7.5, scale=3.0),
    "no_cfg_adaptive": dict(cfg=1.0, scale=3.0, adaptive=0.005),
    "cfg_adaptive": dict(cfg=7.5, scale=3.0, adaptive=0.01),
    "cfg_rescale": dict(cfg=7.5, scale=3.0, rescale=0.7),
    "no_cfg_rescale_ignored": dict(cfg=1.0, scale=3.0, rescale=0.7),
    "cfg_non_square_odd": dict(cfg=7.5, scale=3.0, height=136, width=200),
    "cfg_batch2": dict(cfg=7.5, scale=3.0, batch=2),
    "no_cfg_batch2_non_square": dict(cfg=1.0, scale=3.0, batch=2, height=192, width=128),
    # two layers: diffusers ids "mid" and "down_blocks.1" are ComfyUI's m0 and d3 in this model
    "cfg_two_layers": dict(cfg=7.5, scale=3.0, layers=["mid", "down_blocks.1"], ours="m0, d3"),
}


@pytest.mark.parametrize("case", PAG_CASES)
def test_pag_matches_diffusers(sd1_diffusers, case):
    unet, _, pipes = sd1_diffusers
    c = {"adaptive": 0.0, "rescale": 0.0, "batch": 1, "height": 128, "width": 128, "layers": "mid", "ours": "m0",
         **PAG_CASES[case]}
    key = str(c["layers"])
    if key not in pipes:
        pipes[key] = td.pag_pipeline(unet, c["layers"])
    pipe = pipes[key]
    noise, pe, ne = _inputs(c["batch"], c["height"], c["width"], td.SD1_CONTEXT_DIM)

    def reference(scale, rescale):
        with torch.no_grad():
            return pipe(prompt_embeds=pe, negative_prompt_embeds=ne, latents=noise, height=c["height"],
                        width=c["width"], num_inference_steps=STEPS, guidance_scale=c["cfg"], pag_scale=scale,
                        pag_adaptive_scale=c["adaptive"], guidance_rescale=rescale, output_type="latent").images

    layers = parse_layers(c["ours"], host_layers(unet))
    ours, host = run_host(unet, ddim_schedule(td.ddim(), STEPS), noise, Cond(pe), Cond(ne), c["cfg"],
                          pag_method(layers, c["scale"], c["adaptive"], c["rescale"]))
    # one call per step with the perturbed rows in the same batch as cond/uncond
    assert host.model_calls == [c["batch"] * (3 if c["cfg"] > 1 else 2)] * STEPS
    assert host.attn_calls == STEPS * len(layers)
    ref = reference(c["scale"], c["rescale"])
    if c["rescale"] > 0 and c["cfg"] > 1:
        # the rescale itself must matter too, not just PAG
        check(f"pag_{case}_rescale_effect", ours, ref, reference(c["scale"], 0.0))
    check(f"pag_{case}", ours, ref, reference(0.0, c["rescale"]))


# --- PAG (SDXL, Euler) -------------------------------------------------------------------------------------

SDXL_CASES = {
    "cfg_mid": dict(cfg=5.0, scale=3.0, layers="mid", ours="m0"),
    # 'mid' has 2 transformer blocks here; add an output block with depth 2; batch 2, non-square, adaptive
    "cfg_mid_and_up_batch2_non_square": dict(cfg=5.0, scale=3.0, layers=["mid", "up_blocks.0.attentions.1"],
                                             ours="m0,u1", batch=2, height=192, width=128, adaptive=0.002),
    "no_cfg_rescale_ignored": dict(cfg=1.0, scale=3.0, layers="mid", ours="m0", rescale=0.5),
    "cfg_rescale": dict(cfg=5.0, scale=3.0, layers="mid", ours="m0", rescale=0.7),
}


def _sdxl_cond(context, pooled, height, width):
    b = context.shape[0]
    time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32).repeat(b, 1)
    return Cond(context, {"text_embeds": pooled, "time_ids": time_ids})


@pytest.mark.parametrize("case", SDXL_CASES)
def test_sdxl_pag_matches_diffusers(case):
    c = {"adaptive": 0.0, "rescale": 0.0, "batch": 1, "height": 128, "width": 128, **SDXL_CASES[case]}
    unet = td.sdxl_unet(seed=0)
    pipe = td.sdxl_pag_pipeline(unet, c["layers"])
    b, h, w = c["batch"], c["height"], c["width"]
    noise, pe, ne = _inputs(b, h, w, td.SDXL_CONTEXT_DIM, seed=11)
    pooled, neg_pooled = td.randn((b, td.SDXL_POOLED_DIM), 21), td.randn((b, td.SDXL_POOLED_DIM), 22)

    def reference(scale, rescale):
        with torch.no_grad():
            return pipe(prompt_embeds=pe, negative_prompt_embeds=ne, pooled_prompt_embeds=pooled,
                        negative_pooled_prompt_embeds=neg_pooled, latents=noise, height=h, width=w,
                        num_inference_steps=STEPS, guidance_scale=c["cfg"], pag_scale=scale,
                        pag_adaptive_scale=c["adaptive"], guidance_rescale=rescale, output_type="latent").images

    layers = parse_layers(c["ours"], host_layers(unet))
    assert len(layers) == (2 if c["ours"] == "m0" else 4)
    ours, host = run_host(unet, euler_schedule(td.euler(), STEPS), noise, _sdxl_cond(pe, pooled, h, w),
                          _sdxl_cond(ne, neg_pooled, h, w), c["cfg"],
                          pag_method(layers, c["scale"], c["adaptive"], c["rescale"]))
    assert host.model_calls == [b * (3 if c["cfg"] > 1 else 2)] * STEPS
    ref = reference(c["scale"], c["rescale"])
    if c["rescale"] > 0 and c["cfg"] > 1:
        check(f"sdxl_pag_{case}_rescale_effect", ours, ref, reference(c["scale"], 0.0))
    check(f"sdxl_pag_{case}", ours, ref, reference(0.0, c["rescale"]))
