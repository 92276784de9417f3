"""Each landed method still shows its paper's effect on the shipped demo model (fixed seeds).

The same experiments as `python -m demo` (demo/effects.py), on fewer prompts: the test
fails when the 95% interval of the paired difference (guided - baseline) is no longer
entirely on the better side of 0, i.e. when a change to the method's core, the attention
code or the router makes the effect disappear.
"""
import subprocess
import sys

import pytest
import torch

from attnguide.demo import judge as judges
from attnguide.demo import model as models
from attnguide.demo import methods, scenes
from attnguide.demo import effects
from attnguide.demo.effects import EXCITE_CFG, EXPERIMENTS
from attnguide.demo.host import Host, ddim_sigmas
from attnguide.demo.unet import CROSS_ATTENTION_KEY
from attnguide.guidance.attend_excite import token_maps

N, STEPS, SEED = 16, 12, 0

# Effects the shipped weights (step 6519) do not show: see README, "Demo model", effects as measured.
# strict: once retrained weights show the effect, this test fails until the entry is removed.
NOT_SHOWN_YET = {
    "SAG": "SAG: unconditional misfit difference -0.0004, 95% interval [-0.0021, +0.0014] at n=32 on step 6519 "
           "(+0.0006 [+0.0001, +0.0011] at n=256): SAG barely moves this model's samples",
    "PAG": "PAG: unconditional misfit difference -0.0028, 95% interval [-0.0070, +0.0014] at n=32 on step 6519 "
           "(-0.0010 [-0.0025, +0.0004] at n=256)",
    "Attend-and-Excite": "Attend-and-Excite: all-subjects-present rate difference -0.188, 95% interval "
                         "[-0.357, -0.018] at n=32 on step 6519 (reference step size; worse, not better)",
    "Pix2Pix-Zero structure": "Pix2Pix-Zero structure: shape IoU difference +0.006, 95% interval [-0.040, +0.053] "
                              "at n=32 on step 6519 (guidance amount 0.1 against the direction alone)",
}


@pytest.fixture(scope="module")
def shipped():
    model, meta = models.load()
    return model, judges.load()


def test_shipped_judge_reads_clean_scenes():
    assert judges.accuracy(judges.load(), n=256) >= 0.95


def test_misfit_ranks_known_degradations():
    """The SAG/PAG instrument: clean scenes sit next to the clean scene the judge reads in them;
    noise and blur move them away, more of either more."""
    judge = judges.load()
    clean, _, _ = scenes.batch(torch.Generator().manual_seed(5), 32)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(6))
    blur = lambda im, k: torch.nn.functional.avg_pool2d(torch.nn.functional.pad(im, (k // 2,) * 4, mode="replicate"), k, 1)
    m = {name: judge.misfit(images).mean().item() for name, images in
         {"clean": clean, "noise 0.05": clean + 0.05 * noise, "noise 0.15": clean + 0.15 * noise,
          "blur 3": blur(clean, 3), "blur 5": blur(clean, 5)}.items()}
    assert m["clean"] < 0.01, m
    assert m["clean"] < m["noise 0.05"] < m["noise 0.15"] and m["clean"] < m["blur 3"] < m["blur 5"], m


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(reason=NOT_SHOWN_YET[n], strict=True))
                                  if n in NOT_SHOWN_YET else n for n in EXPERIMENTS])
def test_effect_is_shown(shipped, name):
    model, judge = shipped
    summary = EXPERIMENTS[name](model, judge, N, STEPS, SEED).effect.summary()
    print(name, summary)
    assert summary["effect_shown"], f"{name}: {summary}"


@pytest.mark.parametrize("name", ["SAG", "PAG"])
def test_quality_methods_act_on_the_samples(shipped, name):
    """Until their quality effect shows: the method reaches the model and moves every sample."""
    model, judge = shipped
    r = EXPERIMENTS[name](model, judge, 4, 6, SEED)
    moved = (r.guided - r.baseline).abs().flatten(1).mean(1)
    assert moved.min() > 5e-3, moved


def test_attend_and_excite_raises_the_weakest_subject_attention(shipped):
    """Until its presence effect shows: the demo's composition moves x so that the excited shape
    words' weakest cross-attention peak (the reference's loss) rises, for every image."""
    model, _ = shipped
    contents = [{"red": "circle", "blue": "square"}, {"green": "triangle", "yellow": "circle", "red": "square"}]
    captions = [scenes.caption(c) for c in contents]
    indices = [methods.token_positions(t, list(c.values())) for t, c in zip(captions, contents)]
    with torch.no_grad():
        cond, uncond = model.text.encode(captions), model.text.encode([""] * 2)
    guidance = methods.attend_excite(model, indices)
    host = Host(model, (guidance,))
    sigmas = ddim_sigmas(model, 12)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    ctx = host.router.begin_step(sigmas[0], sigmas, EXCITE_CFG)
    ctx.sampler_conds = {"positive": cond, "negative": uncond}
    moved = guidance.pre_step(host, x, sigmas[0], ctx)
    settings = methods.reference_excite_settings(12)

    def weakest_peak(latent):
        probs = []
        observe = lambda p, layer, options: probs.append(p)
        with torch.no_grad():
            model.eps(latent, sigmas[0], cond, {CROSS_ATTENTION_KEY: observe})
        attention = torch.cat(probs, dim=1).mean(dim=1).reshape(2, 8, 8, -1)
        return [token_maps(a, idx, settings).amax(dim=(1, 2)).min().item() for a, idx in zip(attention, indices)]

    before, after = weakest_peak(x), weakest_peak(moved)
    assert all(a > b for a, b in zip(after, before)), (before, after)


def test_methods_use_the_main_call_as_the_host_adapters_do(shipped):
    """PAG's perturbed rows join the main call; SAG adds one degraded call; SEGA's concept rows join."""
    model, _ = shipped
    b = 2
    cond, uncond = model.text.encode(["a red circle"] * b), model.text.encode([""] * b)
    noise = torch.randn(b, 3, 32, 32)
    cases = {"pag": (methods.pag(model), [3 * b] * 3),
             "sag": (methods.sag(model), [2 * b, b] * 3),
             "sega": (methods.sega([model.text.encode(["red"] * b)], [methods.Concept(warmup=0)]), [3 * b] * 3)}
    for name, (guidance, calls) in cases.items():
        host = Host(model, (guidance,))
        out = host.sample(noise, cond, uncond, 3.0, steps=3)
        assert host.model_calls == calls, name
        assert torch.isfinite(out).all()


def test_demo_command_writes_sheet_and_effects(tmp_path):
    root = models.WEIGHTS.parents[1]
    proc = subprocess.run([sys.executable, "-m", "demo", "--out", str(tmp_path), "--n", "2", "--steps", "2",
                           "--methods", "PAG,SEGA add", "--threads", "1"], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    import json
    report = json.loads((tmp_path / "effects.json").read_text())
    assert set(report["effects"]) == {"PAG", "SEGA add"}
    for s in report["effects"].values():
        assert s["n"] == 2 and {"metric", "baseline", "guided", "difference_95ci"} <= set(s)
    from PIL import Image
    assert Image.open(tmp_path / "sheet.png").size[0] > 400
    lines = proc.stdout.splitlines()
    assert lines[-1] == f"Sheet: {(tmp_path / 'sheet.png').resolve()}"  # it ends by naming the sheet it wrote
    assert "experiment 2/2: SEGA add" in proc.stdout and "PAG: sampling pass 2, step 2/2" in proc.stdout


def test_causal_text_encoder_binds_colours_to_shapes(shipped):
    """README, 'Demo model': fine-tuned with a causal text encoder (demo/model_causal.safetensors), the
    model draws each captioned colour as its captioned shape far more often than the shipped one."""
    model, judge = shipped
    causal, _ = models.load(models.CAUSAL_WEIGHTS)
    assert causal.text.config["causal"] and not model.text.config["causal"]
    contents = effects.prompts(SEED, N, distinct_shapes=True)
    shipped_rate, causal_rate = (judge.present(effects.sample(m, contents, SEED + 1, EXCITE_CFG, STEPS), contents)
                                 for m in (model, causal))
    summary = effects.Effect("causal", "present", "higher", {}, shipped_rate.tolist(), causal_rate.tolist()).summary()
    print(summary)
    assert summary["effect_shown"], summary
