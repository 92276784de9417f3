"""Attend-and-Excite's A1111 script (scripts/attnguide_attend_excite.py) inside the A1111 double
against tests/support/attend_excite_host.py (the core on the sigma-space host, equal to
diffusers' Attend-and-Excite pipeline) on twin UNets: k-diffusion Euler and A1111's DDIM."""
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("ldm.modules.diffusionmodules.openaimodel", reason="needs stable-diffusion-sdkit (ships A1111's ldm)")
pytest.importorskip("diffusers", reason="the reference needs diffusers")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webui_case import (MIN_EFFECT, TOLERANCE, a1, a1111_schedule, generate, host, inputs, leftovers, models, refused,  # noqa: E402,F401
                        td)
import attend_excite_host  # noqa: E402
from attnguide.guidance.attend_excite import ExciteSettings  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
TITLE = "Attend-and-Excite (AttnGuide)"


def ae_args(words="", until="2", thresholds="0: 0.05, 1: 0.5", scale_factor=20.0, downscale=2, indices="2, 5"):
    return [True, words, until, thresholds, scale_factor, 1.0, 0.5, 20, 0.5, downscale, indices]


@pytest.mark.parametrize("kind", ["euler", "ddim"])
@pytest.mark.parametrize("batch", [1, 2])
def test_attend_excite_script_equals_core(models, host, kind, batch):
    noise, cond, uncond = inputs(batch)
    ours, p, runner = generate(host, {TITLE: ae_args()}, kind, 7.5, batch, cond, uncond, noise)
    assert not runner.errors and not host.callbacks.errors, (runner.errors, host.callbacks.errors)
    assert "forward" not in p.sampler.model_wrap_cfg.__dict__ and p.sampler.func in (a1.sample_euler, a1.sample_ddim)
    assert leftovers(models[0], host) == []
    settings = ExciteSettings((2, 5), 2, ((0, 0.05), (1, 0.5)), 20.0)
    schedule = a1111_schedule(kind, models[2])
    ref = attend_excite_host.sample(models[1], schedule, noise, cond, uncond, 7.5, settings, grid=(8, 8)).detach()
    off, _, _ = generate(host, {}, kind, 7.5, batch, cond, uncond, noise)
    diff, effect = td.relative(ours, ref), td.relative(ref, off)
    print(f"attend_excite {kind} batch {batch}: relative difference {diff:.2e}, effect {effect:.2e}")
    assert diff <= TOLERANCE and effect >= MIN_EFFECT
    assert all(prm.grad is None for prm in models[0].parameters())


def test_words_are_found_with_the_prompts_tokenizer(models, host):
    words = ["a", "cat", "and", "a2", "frog"]
    host.shared.sd_model.cond_stage_model = a1.TextModel(words)  # SD1: FrozenCLIPEmbedderWithCustomWords
    noise, cond, uncond = inputs(1)
    by_words, _, r1 = generate(host, {TITLE: ae_args(words="cat, frog", indices="")}, "euler", 7.5, 1, cond, uncond,
                               noise, prompt="a cat and a2 frog")
    by_index, _, r2 = generate(host, {TITLE: ae_args(indices="2, 5")}, "euler", 7.5, 1, cond, uncond, noise)
    assert not r1.errors and not r2.errors
    assert torch.equal(by_words, by_index)
    _, p, r3 = generate(host, {TITLE: ae_args(words="dog", indices="")}, "euler", 7.5, 1, cond, uncond, noise,
                        prompt="a cat and a2 frog")
    assert "words: 'dog' is not in the prompt. The prompt's words are: a, cat, and, a2, frog" in refused(p, r3)
    assert leftovers(models[0], host) == []


def test_hires_pass_policy(models, host):
    """With hires fix every pass gets its own hooks (the first pass's are gone before the second
    starts); Attend-and-Excite skips the second pass, SAG runs in it."""
    from attnguide.scripts.attnguide_webui.a1111.router import SESSION_ATTR
    noise, cond, uncond = inputs(1)
    seen = []

    def second_pass(p, sampler, sample, x):
        session = getattr(p, SESSION_ATTR)
        seen.append((session, type(sampler.model_wrap_cfg.__dict__.get("forward")).__name__, sorted(session.posts_keys())))
        return sample(torch.randn_like(x))

    sag = [True, 0.75, 1.0, 1.0, "m0.0", 0.0, 1.0]
    generate(host, {TITLE: ae_args(), "Self-Attention Guidance (AttnGuide)": sag}, "euler", 7.5, 1, cond, uncond, noise,
             hires=second_pass)
    (session, denoiser_forward, keys), = seen
    assert denoiser_forward == "NoneType"  # no Attend-and-Excite mover in the hires pass
    assert keys == ["sag.0"]
    assert session.closed and leftovers(models[0], host) == []
