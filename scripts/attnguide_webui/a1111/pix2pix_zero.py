"""Pix2Pix-Zero on plain A1111 img2img, composed from guidance.pix2pix_zero the way the
ComfyUI nodes compose it (comfyui/pix2pix_zero_invert.py, comfyui/pix2pix_zero_edit.py).

For the pass the sampler gets an instance sample_img2img that
  1. inverts the init latent along the sigmas that img2img runs (the schedule's tail after
     the denoising strength, modules/sd_samplers_kdiffusion.py:134-138) with the prompt at
     CFG 1, instead of noising it;
  2. calls the sampler's own sample_img2img on a batch of 2b latents, both halves starting
     at the inverted latent (the noise it is given is chosen so x + noise * sigma_max, :143,
     is the inverted latent): rows 0..b-1 the edit, b..2b-1 the reference;
  3. returns the edit rows.
During 2. the CFGDenoiser gets an instance forward that runs one lockstep step (the
reference's CFG with the source prompt, its attn2 maps held for this step only; the edit's
gradient step and CFG with the prompt + direction) and hands the edit to the sampler
through the prediction (guidance.pix2pix_zero.edit_denoised: exact for Euler, first order
for the other k-diffusion samplers). Both are restored when the call ends or fails, and the
session's close restores them too.
"""
import contextlib
import logging

import torch

from ....attention.cross_maps import (
    ReferenceMaps,
    attention_from_probs,
    cross_attention_probs,
)
from ....attention.layers import is_unet, unet_layers
from ....attention.step_window import step_index
from ....guidance import pix2pix_zero as p2pz
from ....methods.pix2pix_zero import inversion_settings
from .forward import forwards_replaced, hand_back
from ..errors import NotServed
from .router import attn1_module
from .step import make_condition_dict, take_rows
from ..webui_samplers import user_name
from ..webui_text import one_window_sentences

TITLE = "Pix2Pix-Zero (AttnGuide)"
_LOG = logging.getLogger("attnguide")


def install(session, source, target, guidance_amount, seed, lambda_auto_corr, lambda_kl, regularization_steps,
            auto_corr_rolls, map_dtype=torch.float16):
    p = session.p
    if getattr(p, "init_latent", None) is None:
        raise NotServed(f"{TITLE}: edits an img2img init image; it is off in txt2img (edit a generated image by "
                        "sending it to img2img with its prompt).")
    sampler = p.sampler
    denoiser = sampler.model_wrap_cfg
    if getattr(denoiser, "alphas", None) is not None:  # only CFGDenoiserTimesteps has it (sd_samplers_timesteps.py:53)
        raise NotServed(f"{TITLE}: the sampler {user_name(sampler)} is a timestep sampler, which this "
                        "method does not serve on A1111; pick Euler (exact, the reference's DDIM in sigma space) or "
                        "another k-diffusion sampler (first order).")
    unet = session.unet
    if not is_unet(unet):
        raise NotServed(f"{TITLE}: {type(unet).__name__} is not a UNet; this method needs the cross-attention of a "
                        "UNet (SD1.x, SD2.x, SDXL).")
    direction = p2pz.edit_direction(_encode(session, source, "source"), _encode(session, target, "target"))
    settings = inversion_settings(lambda_auto_corr, lambda_kl, regularization_steps, auto_corr_rolls)
    attn2 = [attn1_module(unet, layer, "attn2") for layer in unet_layers(unet)]
    editor = _Editor(session, denoiser, direction, float(guidance_amount), attn2, map_dtype)
    original, saved_sample = sampler.sample_img2img, sampler.__dict__.get("sample_img2img")
    saved = {}

    def sample_img2img(p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        from modules import sd_samplers_common
        total, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)   # as sd_samplers_kdiffusion.py:135-138
        sigmas = sampler.get_sigmas(p, total)[total - t_enc - 1:]
        editor.sigmas = [float(s) for s in sigmas]
        with torch.no_grad():
            inverted = editor.invert(x, conditioning, image_conditioning, settings, int(seed))
        start = (inverted - x) / editor.sigmas[0]
        saved["forward"] = denoiser.__dict__.get("forward")
        denoiser.forward = editor
        try:
            out = original(p, torch.cat([x, x]), torch.cat([start, start]), conditioning, unconditional_conditioning,
                           steps=steps, image_conditioning=image_conditioning)
        finally:
            hand_back(denoiser, "forward", editor, saved["forward"])
        return out[:x.shape[0]]

    sampler.sample_img2img = sample_img2img
    session.on_close(lambda: (hand_back(sampler, "sample_img2img", sample_img2img, saved_sample),
                              hand_back(denoiser, "forward", editor, saved.get("forward"))))


def _encode(session, text, name):
    """(sentences, 77, width): the sentences as A1111 encodes prompts, each on its own."""
    from modules import prompt_parser
    lines = p2pz.sentences(text, name)
    height, width = (8 * s for s in session.x.shape[-2:])
    with torch.no_grad():
        cond = session.p.sd_model.get_learned_conditioning(prompt_parser.SdConditioning(lines, width=width, height=height))
    sentences = one_window_sentences(cond, TITLE, name)
    if not torch.isfinite(sentences).all():  # else every step of the edit would be NaN and A1111 fails the run
        raise ValueError(f"{TITLE}: {name}: the model's text encoder gave NaN or infinite values for these sentences "
                         f"({'; '.join(lines)}); try other wording.")
    return sentences


def _with_direction(text, direction):
    if isinstance(text, dict):
        return {**text, "crossattn": p2pz.add_direction(text["crossattn"], direction)}
    return p2pz.add_direction(text, direction)


class _Editor:
    """The CFGDenoiser's forward during the edit pass (x: edit rows, then reference rows)."""

    def __init__(self, session, denoiser, direction, amount, attn2, map_dtype):
        self.session, self.denoiser, self.direction, self.amount = session, denoiser, direction, amount
        self.attn2, self.map_dtype = attn2, map_dtype
        self.sigmas = None
        self.held = 0   # most bytes of reference maps held at once

    def _model(self, x, sigma, text, image_cond, attend=None):
        """The inner model (x in, denoised out), every attn2 layer through `attend` when given."""
        swapped = contextlib.nullcontext() if attend is None else forwards_replaced(self.attn2, lambda m: _Attn2(m, attend))
        with swapped:
            cond = make_condition_dict(self.session.p.sd_model, text, image_cond)
            return self.denoiser.inner_model(x, sigma, cond=cond)

    def _prompt(self, cond, step):
        """Each image's first sub-prompt at this step (AND sub-prompts after the first are not used)."""
        from modules import prompt_parser
        conds_list, text = prompt_parser.reconstruct_multicond_batch(cond, step)
        return take_rows(text, [c[0][0] for c in conds_list])

    def invert(self, x, conditioning, image_cond, settings, seed):
        text = self._prompt(conditioning, 0)
        s_in = x.new_ones([x.shape[0]])
        denoise = lambda xe, sigma: self._model(xe, s_in * sigma, text, image_cond)
        return p2pz.invert(x, self.sigmas, denoise, settings, p2pz.roll_generators(seed, x.shape[0]))

    def __call__(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        from modules import prompt_parser, sd_samplers_common, shared
        if shared.state.interrupted or shared.state.skipped:   # as CFGDenoiser.forward (sd_samplers_cfg_denoiser.py:157)
            raise sd_samplers_common.InterruptedException
        d = self.denoiser
        b = x.shape[0] // 2
        x_edit, x_ref, t, image_cond = x[:b], x[b:], sigma[:b], image_cond[:b]
        now = float(sigma[0])
        step, _ = step_index(self.sigmas, now)
        nxt = self.sigmas[step + 1] if step + 1 < len(self.sigmas) else 0.0
        text = self._prompt(cond, d.step)
        edit_text = _with_direction(text, self.direction)
        uncond_text = prompt_parser.reconstruct_cond_batch(uncond, d.step)
        cfg = float(cond_scale) * float(getattr(d, "cond_scale_miltiplier", 1.0))
        guided = cfg != 1.0
        maps = ReferenceMaps(self.map_dtype)

        def record(key):
            def attend(probs):
                maps.record(key, probs)
                self.held = max(self.held, maps.nbytes())
            return attend

        d_ref = self._model(x_ref, t, text, image_cond, record("cond"))
        if guided:
            d_ref_u = self._model(x_ref, t, uncond_text, image_cond, record("uncond"))
            d_ref = d_ref_u + cfg * (d_ref - d_ref_u)
        halves = 2 if guided else 1
        loss = {}

        def compare(key):
            def attend(probs):
                term = p2pz.map_loss(probs, maps.next(key), halves)
                loss["value"] = term if "value" not in loss else loss["value"] + term
            return attend

        def loss_fn(xu, xc):
            self._model(xc, t, edit_text, image_cond, compare("cond"))
            if guided:
                self._model(xu, t, uncond_text, image_cond, compare("uncond"))
            return loss["value"]

        x_u, x_c = p2pz.guided_latents(x_edit, loss_fn, self.amount, p2pz.default_c_in(now))
        if not guided:
            x_u = x_c
        out = p2pz.cond_at(x_u, x_c, self._model(x_c, t, edit_text, image_cond))
        if guided:
            d_u = self._model(x_u, t, uncond_text, image_cond)
            out = d_u + cfg * (out - d_u)
        d_edit = p2pz.edit_denoised(x_edit, x_u, out, now, nxt)
        d.sampler.last_latent = d_edit   # the live preview / an interrupt's result (sd_samplers_cfg_denoiser.py:295)
        d.step += 1
        return torch.cat([d_edit.to(x.dtype), d_ref.to(x.dtype)])


class _Attn2:
    """Instance forward of one attn2 module for one model call: explicit softmax, the
    probabilities shown to `attend` (recorded or compared)."""

    def __init__(self, module, attend):
        self.module, self.attend = module, attend

    def __call__(self, x, context=None, mask=None, **kwargs):
        m = self.module
        context = x if context is None else context
        probs = cross_attention_probs(m.to_q(x), m.to_k(context), m.heads)
        self.attend(probs)
        return m.to_out(attention_from_probs(probs, m.to_v(context), m.heads))
