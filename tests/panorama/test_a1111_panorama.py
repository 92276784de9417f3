"""The MultiDiffusion panorama script on A1111 (scripts/attnguide_panorama.py) inside the A1111
double: equal to the windowed sampler that tests/panorama/test_panorama_vs_diffusers.py proves
equal to diffusers' panorama pipeline; independent of the window batch (also with SAG, PAG and
SEGA running per window, on both inner models); an interrupt returns the whole image."""
import sys
from pathlib import Path

import pytest

pytest.importorskip("ldm.modules.diffusionmodules.openaimodel", reason="needs stable-diffusion-sdkit (ships A1111's ldm)")
pytest.importorskip("diffusers", reason="the reference needs diffusers")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webui_case import (MIN_EFFECT, STEPS, TOKENS, TOLERANCE, generate, host, leftovers, models, refused,  # noqa: E402,F401
                        td)
from test_panorama_vs_diffusers import windowed_sample  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
TITLE = "MultiDiffusion Panorama (AttnGuide)"
SAG, PAG, SEGA = "Self-Attention Guidance (AttnGuide)", "Perturbed-Attention Guidance (AttnGuide)", "Semantic Guidance (AttnGuide)"


def pano_args(window=128, stride=64, wrap="none", weights="uniform", batch=4):
    return [True, window, window, stride, wrap, weights, batch]


def wide_inputs(batch, height=16, width=40, seed=3):
    noise = td.randn((batch, 4, height, width), seed)
    return noise, td.randn((batch, TOKENS, td.SD1_CONTEXT_DIM), seed + 1), td.randn((batch, TOKENS, td.SD1_CONTEXT_DIM), seed + 2)


@pytest.mark.parametrize("wrap", ["none", "horizontal"])
@pytest.mark.parametrize("window_batch", [1, 3])
def test_panorama_equals_core(models, host, wrap, window_batch):
    noise, cond, uncond = wide_inputs(2)
    ours, p, runner = generate(host, {TITLE: pano_args(wrap=wrap, batch=window_batch)}, "euler", 7.5, 2, cond, uncond, noise)
    assert not runner.errors and not host.callbacks.errors, (runner.errors, host.callbacks.errors)
    assert "forward" not in p.sampler.model_wrap_cfg.__dict__ and leftovers(models[0], host) == []
    ref, calls = windowed_sample(models[1], noise, cond, uncond, 7.5, window=(16, 16), stride=(8, 8),
                                 wrap=(False, wrap == "horizontal"), batch=window_batch, steps=STEPS)
    off, _, _ = generate(host, {}, "euler", 7.5, 2, cond, uncond, noise)
    diff, effect = td.relative(ours, ref), td.relative(ref, off)
    print(f"panorama wrap={wrap} batch={window_batch}: relative difference {diff:.2e}, effect {effect:.2e}")
    assert diff <= TOLERANCE and effect >= MIN_EFFECT
    assert p.extra_generation_params["AttnGuide Panorama wrap"] == wrap


def _methods():
    host_table = {"glasses": td.randn((TOKENS, td.SD1_CONTEXT_DIM), 10)}
    concept = ["glasses", "add", 5.0, 0, -1, "steps", 0.9, 1.0]
    sega = [True, *concept, *([""] + concept[1:]) * 2, 0.3, 0.4]
    return host_table, {SAG: [True, 0.75, 1.0, 1.0, "m0.0", 0.0, 1.0], PAG: [True, 3.0, 0.0, "m0", 0.0, 0.0, 1.0], SEGA: sega}


@pytest.mark.parametrize("kind", ["euler", "ddim"])
def test_window_batch_does_not_matter_with_methods_per_window(models, host, kind):
    table, methods = _methods()
    host.shared.sd_model.embeddings.update(table)
    noise, cond, uncond = wide_inputs(1)
    one, _, r1 = generate(host, {TITLE: pano_args(batch=1), **methods}, kind, 7.5, 1, cond, uncond, noise)
    three, _, r3 = generate(host, {TITLE: pano_args(batch=3), **methods}, kind, 7.5, 1, cond, uncond, noise)
    plain, _, _ = generate(host, {TITLE: pano_args(batch=3)}, kind, 7.5, 1, cond, uncond, noise)
    assert not r1.errors and not r3.errors and not host.callbacks.errors
    assert td.relative(three, one) <= 1e-5
    assert td.relative(three, plain) >= MIN_EFFECT  # the methods did run inside the windows
    assert leftovers(models[0], host) == []


def test_interrupt_returns_the_whole_latent(models, host):
    noise, cond, uncond = wide_inputs(1)
    host.shared.state.interrupt_at = 1
    out, p, _ = generate(host, {TITLE: pano_args()}, "euler", 7.5, 1, cond, uncond, noise)
    host.shared.state.interrupt_at = None
    assert out.shape == noise.shape
    assert "forward" not in p.sampler.model_wrap_cfg.__dict__ and leftovers(models[0], host) == []
