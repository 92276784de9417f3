"""Synthetic scenes: 32x32 RGB, a plain background, 1-3 shapes, and a caption naming them.

Every shape has its own colour, so a scene is fully described by {colour: shape}; that
description is what the caption says (objects in random order) and what the judges in
judge.py recover from an image. Pixel values are in [-1, 1].
"""
import math
from dataclasses import dataclass

import torch

SIZE = 32
SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (0.90, 0.12, 0.12), "green": (0.15, 0.75, 0.20),
           "blue": (0.15, 0.25, 0.90), "yellow": (0.95, 0.85, 0.15)}
BACKGROUND = (0.22, 0.22, 0.22)
RADIUS = {1: (6.0, 9.0), 2: (5.0, 7.5), 3: (4.5, 6.5)}  # shape half-size in pixels, by object count
SUPERSAMPLE = 2          # anti-aliased edges


@dataclass(frozen=True)
class Scene:
    objects: tuple       # ((colour, shape, cx, cy, radius), ...)

    @property
    def content(self):
        return {c: s for c, s, *_ in self.objects}


def caption(content, order=None):
    """'a red circle and a blue square'; `order` is a permutation of the objects."""
    items = list(content.items())
    if order is not None:
        items = [items[i] for i in order]
    return " and ".join(f"a {c} {s}" for c, s in items)


def random_scene(g, max_objects=3):
    n = int(torch.randint(1, max_objects + 1, (1,), generator=g))
    colours = [list(COLOURS)[i] for i in torch.randperm(len(COLOURS), generator=g)[:n]]
    objects = []
    for colour in colours:
        lo, hi = RADIUS[n]
        for _ in range(200):  # rejection sampling: shapes do not overlap (1.2 r bounds a square's corners)
            r = lo + (hi - lo) * float(torch.rand((), generator=g))
            cx, cy = (r + 0.5 + (SIZE - 2 * r - 1) * torch.rand(2, generator=g)).tolist()
            if all(math.hypot(cx - ox, cy - oy) > 1.2 * (r + orr) + 1 for _, _, ox, oy, orr in objects):
                break
        else:
            continue  # no room left: the scene has one object fewer
        shape = SHAPES[int(torch.randint(len(SHAPES), (1,), generator=g))]
        objects.append((colour, shape, cx, cy, r))
    return Scene(tuple(objects))


def shape_mask(shape, cx, cy, r, size=SIZE, ss=SUPERSAMPLE):
    """Coverage in [0, 1] of one shape on the pixel grid."""
    n = size * ss
    coords = (torch.arange(n, dtype=torch.float32) + 0.5) / ss
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    dx, dy = x - cx, y - cy
    if shape == "circle":
        inside = dx ** 2 + dy ** 2 <= r ** 2
    elif shape == "square":
        half = r * 0.85  # about the circle's area
        inside = (dx.abs() <= half) & (dy.abs() <= half)
    elif shape == "triangle":  # upward, centred on its bounding box
        top, bottom = cy - r, cy + r * 0.8
        half_width = r * (y - top) / (bottom - top)
        inside = (y >= top) & (y <= bottom) & (dx.abs() <= half_width)
    else:
        raise ValueError(f"unknown shape {shape!r}; shapes are {SHAPES}")
    return inside.float().reshape(size, ss, size, ss).mean(dim=(1, 3))


def render(scene):
    """(3, 32, 32) image in [-1, 1]."""
    image = torch.tensor(BACKGROUND).view(3, 1, 1).expand(3, SIZE, SIZE).clone()
    for colour, shape, cx, cy, r in scene.objects:
        m = shape_mask(shape, cx, cy, r)
        image = image * (1 - m) + torch.tensor(COLOURS[colour]).view(3, 1, 1) * m
    return image * 2 - 1


def batch(g, n, max_objects=3):
    """(images, scenes, captions) of n random scenes, objects in random caption order."""
    scenes = [random_scene(g, max_objects) for _ in range(n)]
    captions = [caption(s.content, torch.randperm(len(s.objects), generator=g).tolist()) for s in scenes]
    return torch.stack([render(s) for s in scenes]), scenes, captions
