"""attnguide's SEGA against diffusers' SemanticStableDiffusionPipeline on a tiny random model.

Our side: the sigma-space host of sigma_host.py (Euler on the DDIM sigmas) running the demo's
host-free SEGA (demo.methods.sega: the concept rows added to the main model call through the
Router's Method.extra_rows, guidance.sega.sega_denoised after CFG with the momentum carried
across steps, as nodes/sega.py does it), so the demo's composition is the one proven here.
Equality to 1e-4 relative, and the edit must move the result.
"""
import pytest
import torch

pytest.importorskip("diffusers", reason="the reference tests need diffusers (requirements-test.txt)")
pytest.importorskip("transformers", reason="SEGA's reference tokenizes its prompts (requirements-test.txt)")

from diffusers import SemanticStableDiffusionPipeline

from attnguide.attention.router import Router
from attnguide.demo.methods import sega
from attnguide.demo.methods import Concept

import tiny_clip
import tiny_diffusers as td
from sigma_host import Cond, SigmaHost, ddim_schedule

TOLERANCE = 1e-4
MIN_EFFECT = 1e-3
STEPS = 5

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def setup():
    tok = tiny_clip.tokenizer()
    encoder = tiny_clip.text_encoder(tok)
    unet = td.sd1_unet(seed=0)
    pipe = SemanticStableDiffusionPipeline(vae=None, text_encoder=encoder, tokenizer=tok, unet=unet,
                                           scheduler=td.ddim(), safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return tok, encoder, unet, pipe


def reference(pipe, prompts, noise, cfg, edits=None, **kw):
    with torch.no_grad():
        return pipe(prompt=prompts, latents=noise, height=128, width=128, num_inference_steps=STEPS,
                    guidance_scale=cfg, output_type="latent", editing_prompt=edits, **kw).images


def ours(setup, prompts, noise, cfg, edits, concepts, momentum_scale, momentum_beta):
    tok, encoder, unet, _ = setup
    with torch.no_grad():
        cond = Cond(tiny_clip.encode(tok, encoder, prompts))
        uncond = Cond(tiny_clip.encode(tok, encoder, [""] * len(prompts)))
        concept_conds = [Cond(tiny_clip.encode(tok, encoder, [e] * len(prompts))) for e in edits]
        guidance = sega(concept_conds, concepts, momentum_scale, momentum_beta)
        host = SigmaHost(unet, Router().with_method(guidance.method))
        out = host.sample(noise, ddim_schedule(td.ddim(), STEPS), cond, uncond, cfg, (guidance.post_cfg,))
    return out, host


CASES = {
    # two concepts, staggered warmup, one reversed, momentum on, unequal weights
    "staggered": dict(edits=["glasses", "frog"], reverse=[False, True], scale=[5.0, 4.0], warmup=[1, 3],
                      cooldown=None, threshold=[0.9, 0.8], weights=[1.0, 0.5], momentum=(0.3, 0.4)),
    # three concepts, one cooled down mid-run, one warm from the start
    "cooldown": dict(edits=["glasses", "frog", "red hat"], reverse=[False, True, False], scale=[5.0, 6.0, 3.0],
                     warmup=[0, 2, 1], cooldown=[STEPS, 3, STEPS], threshold=[0.9, 0.9, 0.5],
                     weights=[1.0, 1.0, 2.0], momentum=(0.1, 0.4)),
}


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("case", CASES)
def test_sega_equals_diffusers(setup, case, batch):
    c = CASES[case]
    _, _, _, pipe = setup
    prompts = ["a cat", "a dog"][:batch]
    noise = td.randn((batch, 4, 16, 16), 3)
    cfg = 7.5
    kw = dict(reverse_editing_direction=c["reverse"], edit_guidance_scale=c["scale"], edit_warmup_steps=c["warmup"],
              edit_cooldown_steps=c["cooldown"], edit_threshold=c["threshold"], edit_weights=c["weights"],
              edit_momentum_scale=c["momentum"][0], edit_mom_beta=c["momentum"][1])
    ref = reference(pipe, prompts, noise, cfg, c["edits"], **kw)
    ref_off = reference(pipe, prompts, noise, cfg)
    n = len(c["edits"])
    cooldowns = c["cooldown"] or [None] * n
    concepts = [Concept(scale=c["scale"][i], reverse=c["reverse"][i], warmup=c["warmup"][i], cooldown=cooldowns[i],
                        threshold=c["threshold"][i], weight=c["weights"][i]) for i in range(n)]
    out, host = ours(setup, prompts, noise, cfg, c["edits"], concepts, *c["momentum"])
    diff, effect = td.relative(out, ref), td.relative(ref, ref_off)
    print(f"SEGA {case} batch {batch}: relative difference {diff:.2e}, edit effect {effect:.2e}")
    assert host.model_calls == [(2 + n) * batch] * STEPS, "concept rows must run in the main UNet call"
    assert diff <= TOLERANCE
    assert effect >= MIN_EFFECT


def test_sega_without_concept_rows_reaching_warmup_is_momentum_only(setup):
    """Warmup beyond the run: the reference adds nothing (only builds momentum); so do we."""
    _, _, _, pipe = setup
    noise = td.randn((1, 4, 16, 16), 4)
    ref_off = reference(pipe, ["a cat"], noise, 7.5)
    out, _ = ours(setup, ["a cat"], noise, 7.5, ["glasses"], [Concept(warmup=STEPS)], 0.1, 0.4)
    assert td.relative(out, ref_off) <= TOLERANCE
