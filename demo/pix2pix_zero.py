"""Pix2Pix-Zero on the demo model, composed from guidance.pix2pix_zero and
attention.cross_maps as the ComfyUI edit node does: a reference pass (the source prompt)
and the edit pass (the prompt moved by the edit direction) run in lockstep on DDIM's
sigmas; every step the edit latent's CFG halves take the reference's gradient step
towards the reference pass's cross-attention maps of that step (held for one step only).

The source is a generated image (the paper's synthetic-image mode: the reference pass from
the same noise is the source), so no inversion is needed.
"""
import math

import torch

from . import progress, scenes
from ._pack import core
from .host import ddim_sigmas
from .unet import CROSS_ATTENTION_KEY

_p2pz = core("guidance.pix2pix_zero")
_maps = core("attention.cross_maps")


def concept_sentences(word):
    """The demo's sentences that contain a colour or shape word (the paper builds its directions
    from many captions with the word; these are all the demo's one-object captions with it)."""
    if word in scenes.COLOURS:
        return [word] + [f"a {word} {s}" for s in scenes.SHAPES]
    if word in scenes.SHAPES:
        return [f"a {word}"] + [f"a {c} {word}" for c in scenes.COLOURS]
    raise ValueError(f"{word!r} is not a colour or shape of the demo ({', '.join((*scenes.COLOURS, *scenes.SHAPES))})")


def direction(model, source, target):
    with torch.no_grad():
        return _p2pz.edit_direction(model.text.encode(concept_sentences(source)),
                                    model.text.encode(concept_sentences(target)))


class _Attention:
    """The demo UNet's attn2 observer: record the reference's maps, add the loss against them, or nothing."""

    def __init__(self):
        self.store, self.mode, self.key, self.loss, self.halves = None, None, None, None, 2

    def __call__(self, probs, layer, options):
        if self.mode == "record":
            self.store.record(self.key, probs)
        elif self.mode == "loss":
            term = _p2pz.map_loss(probs, self.store.next(self.key), self.halves)
            self.loss = term if self.loss is None else self.loss + term


def edit(model, noise, cond, uncond, edit_direction, cfg=7.5, steps=20, amount=0.1):
    """(source images, edited images) from the same noise: the source pass with `cond`, the edit
    pass with cond + edit_direction and cross-attention guidance of `amount` (0: none)."""
    sigmas = ddim_sigmas(model, steps)
    attention = _Attention()
    options = {CROSS_ATTENTION_KEY: attention}
    edit_cond = _p2pz.add_direction(cond, edit_direction)

    def denoise(x, sigma, context, mode=None, key=None):
        attention.mode, attention.key = mode, key
        try:
            return model.denoise(x, sigma, context, options)
        finally:
            attention.mode = None

    x_ref = x = noise * math.sqrt(1 + sigmas[0] ** 2)
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        attention.store = _maps.ReferenceMaps()
        with torch.no_grad():
            d_ref_u = denoise(x_ref, sigma, uncond, "record", "uncond")
            d_ref_c = denoise(x_ref, sigma, cond, "record", "cond")
        d_ref = d_ref_u + cfg * (d_ref_c - d_ref_u)

        def loss(xu, xc):
            attention.loss = None
            denoise(xu, sigma, uncond, "loss", "uncond")
            denoise(xc, sigma, edit_cond, "loss", "cond")
            return attention.loss

        x_u, x_c = _p2pz.guided_latents(x, loss, amount, _p2pz.default_c_in(sigma))
        with torch.no_grad():
            d_u = denoise(x_u, sigma, uncond)
            d_c = _p2pz.cond_at(x_u, x_c, denoise(x_c, sigma, edit_cond))
        d = _p2pz.edit_denoised(x, x_u, d_u + cfg * (d_c - d_u), sigma, sigma_next)
        x = d + (x - d) * (sigma_next / sigma) if sigma_next > 0 else d
        x_ref = d_ref + (x_ref - d_ref) * (sigma_next / sigma) if sigma_next > 0 else d_ref
        attention.store = None
        progress.step(i + 1, steps)
    return x_ref.clamp(-1, 1), x.clamp(-1, 1)
