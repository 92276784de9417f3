"""SEGA nodes inside real ComfyUI sampling runs: equal to the plain-way guider of
reference_patches (one model call per concept, its own step counter and momentum), concept rows
in the main UNet call, stacking, CFG 1, img2img, SamplerCustomAdvanced, bad input, hygiene."""
import pytest
import torch

import comfy_host as H
from node_runs import BatchLog, pag_node, rel, sag_node

STEPS = 5


def sega_nodes():
    from attnguide.nodes.sega import SEGAConcept, SEGAGuider, SemanticGuidance
    return SEGAConcept, SemanticGuidance, SEGAGuider


def concept_conditioning(model, batch, seed):
    """A concept CONDITIONING as the host's text encoder would give it (with SDXL's pooled/sizes)."""
    pos, _ = H.conds(model, batch, seed=seed)
    return pos


# (seed, direction, scale, warmup, cooldown, timing, threshold, weight)
SPECS = [(11, "add", 5.0, 1, -1, "steps", 0.9, 1.0),
         (12, "remove", 4.0, 40, 80, "percent", 0.8, 0.5)]


def build(model, batch=1, specs=SPECS):
    """Our concept stack and the matching (conditioning, Concept) pairs for the reference guider."""
    from attnguide.guidance.sega import Concept
    from attnguide.guidance.schedule import step_at
    concept_node = sega_nodes()[0]
    stack, pairs = None, []
    for seed, direction, scale, warmup, cooldown, timing, threshold, weight in specs:
        cond = concept_conditioning(model, batch, seed)
        stack = concept_node.execute(prompt="", direction=direction, scale=scale, warmup=warmup, cooldown=cooldown, timing=timing, threshold=threshold, weight=weight,
                                     conditioning=cond, concepts=stack).args[0]
        pairs.append((cond, Concept(scale=scale, reverse=direction == "remove", warmup=step_at(warmup, timing, STEPS),
                                    cooldown=None if cooldown < 0 else step_at(cooldown, timing, STEPS),
                                    threshold=threshold, weight=weight)))
    return stack, pairs


def sega_node(model, concepts, momentum_scale=0.3, momentum_beta=0.4):
    return sega_nodes()[1].execute(model, concepts, momentum_scale=momentum_scale, momentum_beta=momentum_beta).args[0]


def run(model, batch=1, cfg=5.0, denoise=1.0, shape=(16, 16), latent=None):
    pos, neg = H.conds(model, batch)
    latent = torch.zeros(batch, 4, *shape) if latent is None else latent
    return H.sample(model, pos, neg, latent, steps=STEPS, cfg=cfg, denoise=denoise)


def run_ref(model, pairs, batch=1, cfg=5.0, momentum_scale=0.3, momentum_beta=0.4, sigmas=None, latent=None,
            shape=(16, 16)):
    import comfy.sample
    import comfy.samplers
    from reference_patches import RefSEGAGuider
    pos, neg = H.conds(model, batch)
    latent = torch.zeros(batch, 4, *shape) if latent is None else latent
    guider = RefSEGAGuider(model)
    guider.set_sega(pos, neg, pairs, cfg, momentum_scale, momentum_beta)
    if sigmas is None:
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", STEPS)
    noise = comfy.sample.prepare_noise(latent, 0)
    return guider.sample(noise, latent, comfy.samplers.sampler_object("euler"), sigmas, seed=0).cpu()


def test_sega_equals_plain_guider(model):
    stack, pairs = build(model)
    log = BatchLog(model)
    try:
        ours = run(sega_node(model, stack))
    finally:
        log.close()
    ref = run_ref(model, pairs)
    assert log.sizes == [4] * STEPS, f"concept rows must join cond/uncond in one UNet call, got {log.sizes}"
    assert rel(ours, ref) <= 1e-5
    assert rel(run(model), ref) >= 1e-3, "SEGA did not move the result"


def test_sega_batch2_non_square(sd1):
    stack, pairs = build(sd1, batch=2)
    ours = run(sega_node(sd1, stack), batch=2, shape=(13, 19))
    ref = run_ref(sd1, pairs, batch=2, shape=(13, 19))
    assert rel(ours, ref) <= 1e-5


def test_sega_guider_equals_node(model):
    """SamplerCustomAdvanced's way: AttnGuideSEGAGuider gives what KSampler + AttnGuideSEGA gives."""
    import comfy.sample
    import comfy.samplers
    stack, _ = build(model)
    pos, neg = H.conds(model)
    guider = sega_nodes()[2].execute(model, pos, neg, stack, 5.0, momentum_scale=0.3, momentum_beta=0.4).args[0]
    latent = torch.zeros(1, 4, 16, 16)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", STEPS)
    out = guider.sample(comfy.sample.prepare_noise(latent, 0), latent, comfy.samplers.sampler_object("euler"), sigmas,
                        seed=0).cpu()
    assert rel(out, run(sega_node(model, stack))) <= 1e-6


def test_sega_at_cfg1_applies_edits_from_negative(sd1):
    """Our choice where the reference turns SEGA off (guidance_scale <= 1): the edit still
    applies, measured from the negative prompt, which is evaluated for it in the same call."""
    stack, pairs = build(sd1)
    log = BatchLog(sd1)
    try:
        ours = run(sega_node(sd1, stack), cfg=1.0)
    finally:
        log.close()
    ref = run_ref(sd1, pairs, cfg=1.0)
    assert log.sizes == [4] * STEPS
    assert rel(ours, ref) <= 1e-5
    assert rel(run(sd1, cfg=1.0), ref) >= 1e-3


def test_sega_img2img_counts_steps_actually_run(sd1):
    """denoise 0.5 runs the last steps of a longer schedule; warmup/cooldown count from its first step."""
    import comfy.samplers
    stack, pairs = build(sd1)
    latent = H.conds(sd1, seed=5)[0][0][0][:, :4, :16].reshape(1, 4, 16, 1).expand(1, 4, 16, 16).contiguous()
    full = comfy.samplers.calculate_sigmas(sd1.get_model_object("model_sampling"), "normal", 2 * STEPS)
    ours = run(sega_node(sd1, stack), denoise=0.5, latent=latent)
    ref = run_ref(sd1, pairs, sigmas=full[-(STEPS + 1):], latent=latent)
    assert rel(ours, ref) <= 1e-5


def test_momentum_is_reset_for_every_run(sd1):
    stack, _ = build(sd1)
    patched = sega_node(sd1, stack)
    assert torch.equal(run(patched), run(patched))


@pytest.mark.parametrize("order", ["sega_then_pag", "pag_then_sega"])
def test_sega_stacks_with_pag_and_sag(sd1, order):
    """All three on one model: equal to the plain SEGA guider on the plain-way SAG + PAG model."""
    from reference_patches import ref_pag, ref_sag
    stack, pairs = build(sd1)
    if order == "sega_then_pag":
        ours_model = sag_node(pag_node(sega_node(sd1, stack)))
    else:
        ours_model = sega_node(pag_node(sag_node(sd1)), stack)
    log = BatchLog(sd1)
    try:
        ours = run(ours_model)
    finally:
        log.close()
    ref = run_ref(ref_pag(ref_sag(sd1)), pairs)
    assert log.sizes == [5, 1] * STEPS, f"cond, uncond, PAG and 2 concepts in one call, then SAG's: {log.sizes}"
    assert rel(ours, ref) <= 1e-5


def test_input_model_untouched(sd1):
    from test_host_integration import _options_fingerprint
    before = _options_fingerprint(sd1)
    plain = run(sd1)
    stack, _ = build(sd1)
    patched = sega_node(sd1, stack)
    run(patched)
    assert patched is not sd1
    assert _options_fingerprint(sd1) == before
    assert torch.equal(run(sd1), plain)


def test_bad_input(sd1):
    concept, sega, _ = sega_nodes()
    cond = concept_conditioning(sd1, 1, 3)
    with pytest.raises(ValueError, match="no concepts"):
        sega.execute(sd1, [], momentum_scale=0.1, momentum_beta=0.4)
    with pytest.raises(ValueError, match="'prompt' is empty"):
        concept.execute(prompt="  ", direction="add", scale=5.0, warmup=10, cooldown=-1, timing="steps", threshold=0.9, weight=1.0, clip=object())
    with pytest.raises(ValueError, match="connect a CLIP"):
        concept.execute(prompt="sunglasses", direction="add", scale=5.0, warmup=10, cooldown=-1, timing="steps", threshold=0.9, weight=1.0)
    with pytest.raises(ValueError, match=r"threshold is 1.0; it must be in \[0, 1\)"):
        concept.execute(prompt="", direction="add", scale=5.0, warmup=10, cooldown=-1, timing="steps", threshold=1.0, weight=1.0, conditioning=cond)
    other_encoder = [[torch.randn(1, 77, 48), {}]]
    stack = concept.execute(prompt="glasses", direction="add", scale=5.0, warmup=0, cooldown=-1, timing="steps", threshold=0.9, weight=1.0, conditioning=other_encoder).args[0]
    with pytest.raises(ValueError, match="'glasses' was encoded to 48 channels but the prompt has 32"):
        run(sega_node(sd1, stack))


def test_concept_prompt_is_encoded_with_clip(sd1):
    """clip + prompt: the node encodes with the CLIP it is given (tokenize, encode_from_tokens_scheduled)."""
    seen = []

    class FakeClip:
        def tokenize(self, text):
            seen.append(text)
            return {"tokens": text}

        def encode_from_tokens_scheduled(self, tokens):
            return concept_conditioning(sd1, 1, 7)

    concept = sega_nodes()[0]
    (c,) = concept.execute(prompt="sunglasses", direction="remove", scale=5.0, warmup=10, cooldown=-1, timing="steps", threshold=0.9, weight=1.0, clip=FakeClip()).args[0]
    assert seen == ["sunglasses"] and c.concept.reverse and c.concept.label == "sunglasses"
    assert torch.equal(c.conditioning[0][0], concept_conditioning(sd1, 1, 7)[0][0])
