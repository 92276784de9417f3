"""Judges of generated scenes: a colour counter and a small shape classifier.

colour_fraction: per image, the fraction of pixels closer to a palette colour than to any
other palette colour or the background (and within COLOUR_RADIUS of it).

ShapeJudge: a small CNN trained on clean synthetic scenes (never on samples) that says, for
every palette colour, which shape of that colour the image holds (none, circle, square,
triangle). quality(images, contents) = per image, the mean probability it gives the
caption's shape for each captioned colour: high for clean, correct shapes; low for blobs,
smears and wrong shapes. misfit(images) = the distance from each image to the clean scene the judge
reads in it (no caption needed: unconditional samples too). present(images, contents) = 1 where every captioned colour is read
as its captioned shape (every named subject is there, as named). Train it with `python -m demo.judge` (seconds to a minute); it is
shipped as demo/judge.safetensors.
"""
import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from . import scenes

WEIGHTS = Path(__file__).resolve().parent / "judge.safetensors"
COLOUR_NAMES = tuple(scenes.COLOURS)
CLASSES = ("none", *scenes.SHAPES)
COLOUR_RADIUS = 0.35  # in [0, 1] RGB units
SHAPE_AREA = {"circle": math.pi, "square": 1.7 ** 2, "triangle": 1.8}  # area / half-size^2 (scenes.shape_mask)


def nearest_palette(images):
    """(b, h, w) index of the nearest of (background, *palette colours) per pixel."""
    palette = torch.tensor([scenes.BACKGROUND, *scenes.COLOURS.values()])
    rgb = ((images.float() + 1) / 2).permute(0, 2, 3, 1)
    return torch.cdist(rgb.reshape(-1, 3), palette).argmin(-1).reshape(rgb.shape[:3])


def shape_iou(a, b):
    """(b,) intersection over union of the shape (non-background) pixels of two image batches."""
    ma, mb = nearest_palette(a.clamp(-1, 1)) > 0, nearest_palette(b.clamp(-1, 1)) > 0
    return (ma & mb).float().sum(dim=(1, 2)) / (ma | mb).float().sum(dim=(1, 2)).clamp(min=1)


def colour_fraction(images, colour):
    """(b,) fraction of pixels of `colour` in images in [-1, 1]."""
    palette = torch.tensor([scenes.BACKGROUND, *scenes.COLOURS.values()])
    rgb = ((images.float() + 1) / 2).permute(0, 2, 3, 1)
    dist = torch.cdist(rgb.reshape(-1, 3), palette).reshape(*rgb.shape[:3], len(palette))
    nearest = dist.argmin(-1)
    index = 1 + COLOUR_NAMES.index(colour)
    hit = (nearest == index) & (dist[..., index] < COLOUR_RADIUS)
    return hit.float().mean(dim=(1, 2))


class ShapeJudge(nn.Module):
    def __init__(self, width=32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(),
            nn.Linear(128, len(COLOUR_NAMES) * len(CLASSES)))

    def forward(self, images):
        """(b, colours, classes) logits."""
        return self.features(images).view(-1, len(COLOUR_NAMES), len(CLASSES))

    def present(self, images, contents):
        """(b,) 1 where every captioned colour is read as its captioned shape (all subjects present), else 0."""
        with torch.no_grad():
            read = self(images.float().clamp(-1, 1)).argmax(-1)
        return torch.tensor([float(all(r[COLOUR_NAMES.index(c)] == CLASSES.index(s) for c, s in content.items()))
                             for r, content in zip(read, contents)])

    def clean_scenes(self, images):
        """Per image, the clean scene the judge reads in it, rendered: each shape it reads is placed at the
        centroid of its colour's pixels and sized from their count, as scenes.render draws it."""
        with torch.no_grad():
            read = self(images.float().clamp(-1, 1)).argmax(-1)
        nearest = nearest_palette(images.clamp(-1, 1))
        ys, xs = torch.meshgrid(torch.arange(scenes.SIZE) + 0.5, torch.arange(scenes.SIZE) + 0.5, indexing="ij")
        out = []
        for classes, near in zip(read, nearest):
            objects = []
            for i, colour in enumerate(COLOUR_NAMES):
                mask = (near == i + 1).float()
                area, shape = mask.sum().item(), CLASSES[classes[i]]
                if shape == "none" or area < 1:
                    continue
                r = math.sqrt(area / SHAPE_AREA[shape])
                cx, cy = (mask * xs).sum().item() / area, (mask * ys).sum().item() / area
                if shape == "triangle":
                    cy -= 0.2 * r  # a triangle's centroid lies 0.2 r below the centre of its box
                objects.append((colour, shape, cx, cy, r))
            out.append(scenes.render(scenes.Scene(tuple(objects))))
        return torch.stack(out)

    def swapped(self, images, contents, source, target):
        """(b,) 1 where the captioned `source` colour's shape is read in the `target` colour and
        nothing is read in `source` (a concept swap done: target present, source gone), else 0."""
        with torch.no_grad():
            read = self(images.float().clamp(-1, 1)).argmax(-1)
        s, t = COLOUR_NAMES.index(source), COLOUR_NAMES.index(target)
        return torch.tensor([float(r[t] == CLASSES.index(c[source]) and r[s] == CLASSES.index("none"))
                             for r, c in zip(read, contents)])

    def misfit(self, images):
        """(b,) mean |image - clean_scenes(image)| in [0, 1] RGB units: how far a sample is from the
        nearest clean scene (as the judge reads it). About 0.005 for clean scenes; noise, blur, smears,
        mixed colours, extra or malformed shapes raise it."""
        images = images.float().clamp(-1, 1)
        return (images - self.clean_scenes(images)).abs().mean(dim=(1, 2, 3)) / 2

    def quality(self, images, contents):
        """(b,) mean probability of the captioned shape of each captioned colour."""
        with torch.no_grad():
            probs = self(images.float().clamp(-1, 1)).softmax(-1)
        scores = []
        for p, content in zip(probs, contents):
            scores.append(torch.stack([p[COLOUR_NAMES.index(c), CLASSES.index(s)] for c, s in content.items()]).mean())
        return torch.stack(scores)


def targets(scene_list):
    t = torch.zeros(len(scene_list), len(COLOUR_NAMES), dtype=torch.long)
    for i, s in enumerate(scene_list):
        for c, shape in s.content.items():
            t[i, COLOUR_NAMES.index(c)] = CLASSES.index(shape)
    return t


def train(steps=600, batch=64, seed=0, log=print):
    torch.manual_seed(seed)
    judge = ShapeJudge()
    opt = torch.optim.Adam(judge.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        images, scene_list, _ = scenes.batch(g, batch)
        images = images + 0.03 * torch.randn(images.shape, generator=g)  # sampler noise is not a shape cue
        loss = F.cross_entropy(judge(images).flatten(0, 1), targets(scene_list).flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            log(f"judge step {step + 1} loss {loss.item():.4f}")
    return judge.eval()


def accuracy(judge, n=512, seed=123):
    g = torch.Generator().manual_seed(seed)
    images, scene_list, _ = scenes.batch(g, n)
    with torch.no_grad():
        return (judge(images).argmax(-1) == targets(scene_list)).all(-1).float().mean().item()


def load(path=WEIGHTS):
    judge = ShapeJudge()
    judge.load_state_dict(load_file(str(path)))
    return judge.eval()


def main(argv=None):
    p = argparse.ArgumentParser(description="Train the shape judge on clean synthetic scenes.")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--out", default=str(WEIGHTS))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.monotonic()
    judge = train(args.steps)
    print(f"trained in {time.monotonic() - start:.0f} s; whole-scene accuracy on held-out clean scenes: "
          f"{accuracy(judge):.3f}")
    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, args.out)


if __name__ == "__main__":
    main()
