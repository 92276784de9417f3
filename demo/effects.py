"""Each landed method's claim from its paper, measured on the demo model.

An experiment samples the same prompts from the same noise without and with one method and
scores every pair of images with a judge (judge.py). The effect is the mean paired
difference guided - baseline with a 95% interval (Student t over the n pairs); a method
"shows its effect" when that interval lies entirely on the better side of 0.

Experiments are registered in EXPERIMENTS (name -> function(model, judge, n, steps, seed));
a method that lands adds its own function here.
"""
import math
from dataclasses import dataclass, field

import torch

from . import methods, panorama, pix2pix_zero, scenes
from .host import Host
from .judge import colour_fraction, shape_iou

# two-sided 95% Student t critical values by degrees of freedom
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
        29: 2.045, 30: 2.042}


def t95(df):
    return _T95[df] if df in _T95 else 1.960 + 2.4 / df


@dataclass
class Effect:
    method: str
    metric: str
    better: str              # "higher" or "lower"
    settings: dict
    baseline_values: list = field(repr=False)
    guided_values: list = field(repr=False)

    @property
    def n(self):
        return len(self.baseline_values)

    def summary(self):
        b, g = torch.tensor(self.baseline_values), torch.tensor(self.guided_values)
        d = g - b
        half = t95(self.n - 1) * d.std().item() / math.sqrt(self.n) if self.n > 1 else math.inf
        lo, hi = d.mean().item() - half, d.mean().item() + half
        shown = lo > 0 if self.better == "higher" else hi < 0
        return {"metric": self.metric, "better": self.better, "baseline": round(b.mean().item(), 4),
                "guided": round(g.mean().item(), 4), "n": self.n, "difference": round(d.mean().item(), 4),
                "difference_95ci": [round(lo, 4), round(hi, 4)], "effect_shown": shown, "settings": self.settings}


@dataclass
class Result:
    effect: Effect
    baseline: torch.Tensor   # images in [-1, 1]
    guided: torch.Tensor
    prompts: list


def prompts(seed, n, objects=(2, 3), exclude=None, include=None, distinct_shapes=False):
    """n scene descriptions ({colour: shape}) drawn from `seed`, with 2-3 objects by default;
    distinct_shapes: no shape named twice (every subject has a noun of its own)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < n:
        s = scenes.random_scene(g)
        c = s.content
        if distinct_shapes and len(set(c.values())) < len(c):
            continue
        if len(c) in objects and (exclude is None or exclude not in c) and (include is None or include in c):
            out.append(c)
    return out


def noise(seed, n, width=scenes.SIZE):
    return torch.randn((n, 3, scenes.SIZE, width), generator=torch.Generator().manual_seed(seed))


def sample(model, contents, seed, cfg, steps, guidances=(), host=None, width=scenes.SIZE):
    """Samples of the captions of `contents` (None: n unconditional samples, the empty prompt)."""
    text = [scenes.caption(c) for c in contents] if isinstance(contents, list) else [""] * contents
    with torch.no_grad():
        cond, uncond = model.text.encode(text), model.text.encode([""] * len(text))
    host = host or Host(model, guidances)
    return host.sample(noise(seed, len(text), width), cond, uncond, cfg, steps).clamp(-1, 1)


def _quality_experiment(name, make, settings):
    """SAG's and PAG's claim: better samples without (or at low) CFG. As in both papers' main
    experiments (unconditional ADM, FID), the samples are unconditional (the empty prompt, CFG 1);
    quality is each sample's distance to the nearest clean scene (judge.misfit), a per-sample
    stand-in for FID's distance to the data distribution."""
    def run(model, judge, n, steps, seed):
        base = sample(model, n, seed + 1, 1.0, steps)
        guided = sample(model, n, seed + 1, 1.0, steps, (make(model),))
        effect = Effect(name, "distance to the nearest clean scene (unconditional samples)", "lower",
                        {"cfg": 1.0, "prompt": "", "steps": steps, **settings},
                        judge.misfit(base).tolist(), judge.misfit(guided).tolist())
        return Result(effect, base, guided, [""] * n)
    return run


SAG = dict(scale=0.75, blur_sigma=1.0)
PAG = dict(scale=3.0, layers="m0")
SEGA = dict(scale=5.0, warmup=2, threshold=0.9)
SEGA_CFG = 5.0


def _sega_experiment(name, colour, reverse):
    def run(model, judge, n, steps, seed):
        contents = prompts(seed, n, objects=(1, 2), exclude=None if reverse else colour,
                           include=colour if reverse else None)
        with torch.no_grad():
            concept = model.text.encode([colour] * n)
        base = sample(model, contents, seed + 1, SEGA_CFG, steps)
        g = methods.sega([concept], [methods.Concept(reverse=reverse, **SEGA)])
        guided = sample(model, contents, seed + 1, SEGA_CFG, steps, (g,))
        effect = Effect(name, f"fraction of {colour} pixels", "lower" if reverse else "higher",
                        {"cfg": SEGA_CFG, "steps": steps, "concept": colour,
                         "direction": "remove" if reverse else "add", **SEGA},
                        colour_fraction(base, colour).tolist(), colour_fraction(guided, colour).tolist())
        return Result(effect, base, guided, [scenes.caption(c) for c in contents])
    return run


EXCITE_CFG = 2.5


def _excite_experiment(name):
    """Attend-and-Excite's claim: every subject the prompt names is generated (no catastrophic
    neglect). As in the paper, the excited tokens are the subjects' nouns (here the shape words) on
    prompts whose subjects are distinct (no shape named twice: two identical tokens would split one
    softmax between them), at a low CFG; steps and thresholds are the reference's at the same
    fractions of the sampler's steps (methods.reference_excite_settings)."""
    def run(model, judge, n, steps, seed):
        contents = prompts(seed, n, distinct_shapes=True)
        captions = [scenes.caption(c) for c in contents]
        indices = [methods.token_positions(t, list(c.values())) for t, c in zip(captions, contents)]
        base = sample(model, contents, seed + 1, EXCITE_CFG, steps)
        guided = sample(model, contents, seed + 1, EXCITE_CFG, steps, (methods.attend_excite(model, indices),))
        s = methods.reference_excite_settings(steps)
        effect = Effect(name, "all named subjects present (each captioned colour read as its captioned shape)",
                        "higher", {"cfg": EXCITE_CFG, "steps": steps, "excited": "shape words",
                                   "max_iter_to_alter": s.max_iter_to_alter, "thresholds": list(s.thresholds),
                                   "scale_factor": s.scale_factor},
                        judge.present(base, contents).tolist(), judge.present(guided, contents).tolist())
        return Result(effect, base, guided, captions)
    return run


PIX2PIX_ZERO = dict(source="red", target="green", cfg=7.5, amount=0.1)  # the reference's CFG and amount


def _pix2pix_zero_edits(model, n, steps, seed, amount):
    """(contents, source images, edits): prompts with the source colour and without the target one."""
    source, target = PIX2PIX_ZERO["source"], PIX2PIX_ZERO["target"]
    contents = prompts(seed, n, objects=(1, 2), include=source, exclude=target)
    with torch.no_grad():
        cond = model.text.encode([scenes.caption(c) for c in contents])
        uncond = model.text.encode([""] * n)
    src, edited = pix2pix_zero.edit(model, noise(seed + 1, n), cond, uncond, pix2pix_zero.direction(model, source, target),
                                    PIX2PIX_ZERO["cfg"], steps, amount)
    return contents, src, edited


def _pix2pix_zero_swap(name):
    """Pix2Pix-Zero's claim, part 1: the edit swaps the concept (red -> green): the source image
    (the reference pass from the same noise) against its edit."""
    def run(model, judge, n, steps, seed):
        contents, src, edited = _pix2pix_zero_edits(model, n, steps, seed, PIX2PIX_ZERO["amount"])
        swapped = lambda im: judge.swapped(im, contents, PIX2PIX_ZERO["source"], PIX2PIX_ZERO["target"]).tolist()
        effect = Effect(name, "target present and source gone (red shape now read in green, no red)", "higher",
                        {"steps": steps, **PIX2PIX_ZERO, "baseline": "the source image"}, swapped(src), swapped(edited))
        return Result(effect, src, edited, [scenes.caption(c) for c in contents])
    return run


def _pix2pix_zero_structure(name):
    """Pix2Pix-Zero's claim, part 2: cross-attention guidance keeps the source's structure: shape
    mask IoU between source and edit, the edit direction alone (amount 0) against the method."""
    def run(model, judge, n, steps, seed):
        contents, src, plain = _pix2pix_zero_edits(model, n, steps, seed, 0.0)
        _, _, guided = _pix2pix_zero_edits(model, n, steps, seed, PIX2PIX_ZERO["amount"])
        effect = Effect(name, "shape mask IoU between source and edit", "higher",
                        {"steps": steps, **PIX2PIX_ZERO, "baseline": "edit direction without cross-attention guidance"},
                        shape_iou(src, plain).tolist(), shape_iou(src, guided).tolist())
        return Result(effect, plain, guided, [scenes.caption(c) for c in contents])
    return run


PANORAMA = dict(width=3 * scenes.SIZE, window=scenes.SIZE, stride=8)
PANORAMA_CFG = 5.0


def _panorama_experiment(name, metric, score, baseline_host, guided_host, settings, better="lower"):
    def run(model, judge, n, steps, seed):
        contents = prompts(seed, n, objects=(1, 2, 3))
        width = PANORAMA["width"]
        base = sample(model, contents, seed + 1, PANORAMA_CFG, steps, host=baseline_host(model), width=width)
        guided = sample(model, contents, seed + 1, PANORAMA_CFG, steps, host=guided_host(model), width=width)
        effect = Effect(name, metric, better, {"cfg": PANORAMA_CFG, "steps": steps, **PANORAMA, **settings},
                        score(base).tolist(), score(guided).tolist())
        return Result(effect, base, guided, [scenes.caption(c) for c in contents])
    return run


_TILE_BORDERS = list(range(scenes.SIZE, PANORAMA["width"], scenes.SIZE))


EXPERIMENTS = {
    "SAG": _quality_experiment("SAG", lambda m: methods.sag(m, **SAG), SAG),
    "PAG": _quality_experiment("PAG", lambda m: methods.pag(m, **PAG), PAG),
    "Attend-and-Excite": _excite_experiment("Attend-and-Excite"),
    "Pix2Pix-Zero swap": _pix2pix_zero_swap("Pix2Pix-Zero swap"),
    "Pix2Pix-Zero structure": _pix2pix_zero_structure("Pix2Pix-Zero structure"),
    "SEGA add": _sega_experiment("SEGA add", "red", reverse=False),
    "SEGA remove": _sega_experiment("SEGA remove", "red", reverse=True),
    # MultiDiffusion's claim: overlapping windows averaged every step join seamlessly where
    # separately generated tiles (the baseline: windows that do not overlap) show seams.
    "Panorama seams": _panorama_experiment(
        "Panorama seams", "column step at tile borders / elsewhere", lambda im: panorama.seam_ratio(im, _TILE_BORDERS),
        lambda m: panorama.PanoramaHost(m, PANORAMA["window"], PANORAMA["window"]),
        lambda m: panorama.PanoramaHost(m, PANORAMA["window"], PANORAMA["stride"]),
        {"baseline": "non-overlapping tiles (stride = window)"}),
    # 360 degrees: with wrap-around the join of the right and left edges is one more interior place,
    # so content continues across it; without, the model keeps the canvas's edges empty (its
    # training scenes never cut a shape at the border) and the loop closes on an empty band.
    "Panorama wrap": _panorama_experiment(
        "Panorama wrap", "shape pixels at the join (2 columns each side) minus canvas mean", panorama.join_occupancy,
        lambda m: panorama.PanoramaHost(m, PANORAMA["window"], PANORAMA["stride"]),
        lambda m: panorama.PanoramaHost(m, PANORAMA["window"], PANORAMA["stride"], wrap=(False, True)),
        {"baseline": "MultiDiffusion without wrap-around"}, better="higher"),
}
