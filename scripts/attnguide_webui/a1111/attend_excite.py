"""Attend-and-Excite on plain A1111: the pass's CFGDenoiser gets an instance forward that,
inside the refinement window, moves each image's latent (guidance.attend_excite) with
grad-enabled conditional forwards whose cross-attention maps of one UNet level are
captured by temporary attn2 forwards, then denoises at the moved latent and hands the
move to the sampler through the prediction (guidance.latent_update.moved_latent_denoised).

That hand-over needs the next sigma: the sampler function is wrapped for the pass to see
the schedule it is given (k-diffusion samplers: `sigmas`; DDIM: `timesteps`). Exact for
Euler and DDIM, first order for the other k-diffusion samplers (as the ComfyUI node);
PLMS, UniPC and DDIM CFG++ are not served (a message says so).
"""
import functools
import logging
import math

import torch

from ....attention.cross_maps import MapStore
from ....attention.step_window import step_index
from ....attention.unet_levels import cross_attention_levels, grid
from ....guidance.attend_excite import excite_latent
from ....guidance.excite_inputs import match_words
from ....attention.excite_forward import measured_maps
from ....guidance.latent_update import moved_latent_denoised
from ....methods.attend_excite import build
from ....methods.build import Target
from .forward import InstanceForward, forwards_replaced, hand_back
from ..errors import NotServed
from .router import attn1_module
from .space import space_for
from .step import make_condition_dict, take_rows
from ..webui_samplers import excite_refusal

TITLE = "Attend-and-Excite (AttnGuide)"
_LOG = logging.getLogger("attnguide")


def install(session, prompt, **params):
    p = session.p
    sampler = p.sampler
    denoiser = sampler.model_wrap_cfg
    timestep_sampler = getattr(denoiser, "alphas", None) is not None
    refusal = excite_refusal(sampler, TITLE, timestep=timestep_sampler)
    if refusal:
        raise NotServed(refusal)
    unet = session.unet
    try:
        plan = build(Target("excite", levels=cross_attention_levels(unet)), **params,
                     word_indices=lambda words: word_positions(p.sd_model, prompt, words))
    except ValueError as e:
        raise ValueError(f"{TITLE}: {e}") from None
    token_indices = params.get("token_indices", "")
    if token_indices and token_indices.strip():
        last = prompt_positions(p.sd_model, prompt) - 2  # before the last chunk's <|endoftext|>
        if max(plan.base.indices) > last:  # checked again on the maps while sampling, where an error fails the generation
            raise ValueError(f"{TITLE}: token index {max(plan.base.indices)} is past the prompt's last position ({last}).")
    mover = _Mover(session, denoiser, plan.settings, [attn1_module(unet, l, "attn2") for l in plan.layers],
                   plan.downscale)
    denoiser.forward = mover
    session.on_close(mover.remove)
    original, saved = sampler.func, sampler.__dict__.get("func")

    @functools.wraps(original)  # the sampler reads the function's parameters (sd_samplers_kdiffusion.py:197-230)
    def func(*args, **kwargs):
        mover.set_schedule(kwargs.get("sigmas"), kwargs.get("timesteps"))
        return original(*args, **kwargs)

    sampler.func = func
    session.on_close(lambda: hand_back(sampler, "func", func, saved))


def word_positions(sd_model, prompt, words):
    """Token positions of the words in the prompt as A1111 tokenizes it: 77-token chunks,
    <|startoftext|> at 0 of each (modules/sd_hijack_clip.py:81 tokenize_line) by the prompt's
    text model (sd_model.cond_stage_model; for SDXL its CLIP-L embedder, sd_hijack.py:228)."""
    model = sd_model.cond_stage_model
    piece = _pieces(model)
    chunks, _ = model.tokenize_line(prompt)
    tokens = []
    for c, chunk in enumerate(chunks):
        for j, token in enumerate(chunk.tokens[1:], start=1):
            if token == model.id_end:
                break
            tokens.append((c * len(chunk.tokens) + j, token, piece(token)))
    return match_words(tokens, words, lambda name: model.tokenize([name])[0],
                       " (the words are looked up in the positive prompt)")


def prompt_positions(sd_model, prompt):
    """Token positions of the prompt's conditioning: 77 per chunk (modules/sd_hijack_clip.py)."""
    chunks, _ = sd_model.cond_stage_model.tokenize_line(prompt)
    return sum(len(chunk.tokens) for chunk in chunks)


def _pieces(model):
    """id -> BPE piece ('cat</w>'), for naming the prompt's words in an error."""
    tokenizer = getattr(model.wrapped, "tokenizer", None)
    if tokenizer is not None:  # CLIP (transformers' CLIPTokenizer)
        return tokenizer.convert_ids_to_tokens
    try:  # OpenCLIP (SD2.x): sd_hijack_open_clip.py tokenizes with open_clip's _tokenizer
        from open_clip.tokenizer import _tokenizer
        return lambda token: _tokenizer.decoder.get(token, "?")
    except ImportError:
        return lambda token: "?"


class _Measured(Exception):
    """Ends a measuring forward once the last map is captured."""


class _Mover(InstanceForward):
    def __init__(self, session, denoiser, settings, attn2, downscale):
        super().__init__(denoiser)
        self.session, self.denoiser, self.settings = session, denoiser, settings
        self.attn2, self.downscale = attn2, downscale
        self.schedule, self.warned = None, False

    def set_schedule(self, sigmas, timesteps):
        """The pass's schedule in sigma space, descending."""
        space = space_for(self.denoiser)
        if sigmas is not None:
            self.schedule = [float(s) for s in sigmas]
        elif timesteps is not None:  # DDIM evaluates timesteps[-1] .. timesteps[1], ends at timesteps[0]
            self.schedule = [float(space.sigma(t.reshape(1))[0]) for t in torch.as_tensor(timesteps).flip(0)]

    def __call__(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        args = (uncond, cond, cond_scale, s_min_uncond, image_cond)
        if self.schedule is None:
            if not self.warned:
                self.warned = True
                _LOG.warning("attnguide: %s needs a sampler that is given a sigma schedule; it is off for this image.", TITLE)
            return self.previous(x, sigma, *args)
        d = self.denoiser
        space = space_for(d)
        now = float(space.sigma(sigma[:1])[0])
        step, steps = step_index(self.schedule, now)
        settings = self.settings(steps)
        if not settings.runs_at(step):
            return self.previous(x, sigma, *args)
        from modules import prompt_parser
        conds_list, text = prompt_parser.reconstruct_multicond_batch(cond, d.step)
        x_sigma = space.x(x, sigma).float()
        c_in = 1.0 / math.sqrt(now ** 2 + 1.0)
        moved = []
        with torch.inference_mode(False), torch.enable_grad():  # A1111 samples under no_grad (processing.py:919)
            for i in range(x.shape[0]):
                row = conds_list[i][0][0]
                measure = lambda xi, i=i, row=row: self.evaluate(xi.to(x.dtype), sigma[i:i + 1], take_rows(text, [row]),
                                                                image_cond[i:i + 1])
                xi, _, _ = excite_latent(x_sigma[i:i + 1], step, steps, c_in, settings, measure)
                moved.append(xi)
        x_moved_sigma = torch.cat(moved).to(x.dtype)
        x_moved = space.model_x(x_moved_sigma, sigma)
        denoised = space.denoised(x_moved, sigma, self.previous(x_moved, sigma, *args))
        nxt = self.schedule[step + 1] if step + 1 < len(self.schedule) else 0.0
        return space.output(x, sigma, moved_latent_denoised(space.x(x, sigma), x_moved_sigma, denoised, now, nxt))

    def evaluate(self, x_sigma, t, text, image_cond):
        """(h, w, tokens) cross-attention of one image at the chosen level, in the autograd graph."""
        d = self.denoiser
        space = space_for(d)
        h, w = grid(x_sigma.shape[-2], x_sigma.shape[-1], self.downscale)
        store = MapStore(h * w)
        cond = make_condition_dict(self.session.p.sd_model, text, image_cond)
        with self._capturing(store):
            try:
                d.inner_model(space.model_x(x_sigma, t), t, cond=cond)
            except _Measured:
                pass
        return measured_maps(store, self.settings(1).indices, TITLE, h, w, self.downscale)

    def _capturing(self, store):
        return forwards_replaced(self.attn2, lambda m: functools.partial(_capture, m, store, len(self.attn2)))


def _capture(module, store, layers, x, context=None, mask=None, **kwargs):
    context = x if context is None else context
    out = module.to_out(store.attend(module.to_q(x), module.to_k(context), module.to_v(context), module.heads))
    if len(store.maps) == layers:
        raise _Measured  # the rest of the UNet cannot change the maps: skip it
    return out
