"""SEGA's A1111 script (scripts/attnguide_sega.py) inside the A1111 double against the demo's
host-free SEGA composition on the sigma-space host (proven equal to diffusers' semantic
pipeline by tests/sega/test_sega_vs_diffusers.py), on twin UNets with the same weights."""
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("ldm.modules.diffusionmodules.openaimodel", reason="needs stable-diffusion-sdkit (ships A1111's ldm)")
pytest.importorskip("diffusers", reason="the reference needs diffusers")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webui_case import (MIN_EFFECT, STEPS, TOKENS, TOLERANCE, generate, host, inputs, leftovers, models, refused,  # noqa: E402,F401
                        reference, td)

from attnguide.demo.methods import sega  # noqa: E402
from attnguide.demo.methods import Concept  # noqa: E402
from sigma_host import Cond  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
TITLE = "Semantic Guidance (AttnGuide)"
SLOTS = 3


def sega_args(concepts, momentum_scale=0.1, momentum_beta=0.4):
    args = [True]
    for slot in range(SLOTS):
        c = concepts[slot] if slot < len(concepts) else {}
        args += [c.get("prompt", ""), c.get("direction", "add"), c.get("scale", 5.0), c.get("warmup", 10),
                 c.get("cooldown", -1), c.get("timing", "steps"), c.get("threshold", 0.9), c.get("weight", 1.0)]
    return args + [momentum_scale, momentum_beta]


CONCEPTS = [dict(prompt="glasses", scale=5.0, warmup=1, threshold=0.9, weight=1.0),
            dict(prompt="frog", direction="remove", scale=4.0, warmup=2, cooldown=3, threshold=0.8, weight=0.5)]


def core_concepts(concepts):
    return [Concept(scale=c["scale"], reverse=c.get("direction") == "remove", warmup=c["warmup"],
                    cooldown=None if c.get("cooldown", -1) < 0 else c["cooldown"], threshold=c["threshold"],
                    weight=c["weight"]) for c in concepts]


@pytest.mark.parametrize("kind", ["euler", "ddim"])
@pytest.mark.parametrize("batch", [1, 2])
def test_sega_script_equals_core(models, host, kind, batch):
    noise, cond, uncond = inputs(batch)
    table = host.shared.sd_model.embeddings
    for i, c in enumerate(CONCEPTS):
        table[c["prompt"]] = td.randn((TOKENS, td.SD1_CONTEXT_DIM), 10 + i)
    ours, p, runner = generate(host, {TITLE: sega_args(CONCEPTS, 0.3, 0.4)}, kind, 7.5, batch, cond, uncond, noise)
    assert not runner.errors and not host.callbacks.errors, (runner.errors, host.callbacks.errors)
    assert leftovers(models[0], host) == []
    assert [list(e) for e in host.shared.sd_model.encoded] == [["glasses"] * batch, ["frog"] * batch]
    assert p.extra_generation_params["AttnGuide SEGA 2 direction"] == "remove"
    concept_conds = [Cond(torch.stack([table[c["prompt"]]] * batch)) for c in CONCEPTS]
    guidance = sega(concept_conds, core_concepts(CONCEPTS), 0.3, 0.4, key="sega.0")
    ref = reference(models, kind, noise, cond, uncond, 7.5, [(guidance.method, guidance.post_cfg)])
    off, _, _ = generate(host, {}, kind, 7.5, batch, cond, uncond, noise)
    diff, effect = td.relative(ours, ref), td.relative(ref, off)
    print(f"sega {kind} batch {batch}: relative difference {diff:.2e}, effect {effect:.2e}")
    assert diff <= TOLERANCE and effect >= MIN_EFFECT


def test_concept_of_other_length_runs_in_its_own_call(models, host):
    """A concept whose token count differs from the prompt's cannot share the batch: it runs in
    a UNet call of its own after the main one and still moves the image."""
    noise, cond, uncond = inputs(1)
    host.shared.sd_model.embeddings["glasses"] = td.randn((2 * TOKENS, td.SD1_CONTEXT_DIM), 10)
    unet = models[0]
    calls = []
    handle = unet.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        ours, _, runner = generate(host, {TITLE: sega_args([dict(prompt="glasses", warmup=0)])}, "euler", 7.5, 1,
                                   cond, uncond, noise)
    finally:
        handle.remove()
    assert not runner.errors and not host.callbacks.errors
    assert calls == [2, 1] * STEPS
    off, _, _ = generate(host, {}, "euler", 7.5, 1, cond, uncond, noise)
    assert td.relative(ours, off) >= MIN_EFFECT
    assert leftovers(unet, host) == []
