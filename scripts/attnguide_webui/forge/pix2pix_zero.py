"""Pix2Pix-Zero on a Forge/reForge patcher: the ComfyUI nodes' inversion and edit
(comfyui/pix2pix_zero_invert.py, comfyui/pix2pix_zero_edit.py) on the img2img init latent.

A conditioning modifier (after the router's, which opens the step) runs each step itself:
  first step of a run: inverts the init latent (params["init_latent"]) along the run's sigmas
                       with the prompt at CFG 1 (model calls through the patcher);
  every step:          the reference (the prompt = the source caption) at its own latent,
                       its attn2 maps held for this step only, stepped with Euler (= DDIM);
                       the edit's gradient step on both CFG halves and its CFG with
                       prompt + direction.
A post-CFG function, run last, hands the sampler the prediction that carries its x to the
edit's next latent (guidance.pix2pix_zero.edit_denoised). At the first step that replaces
img2img's noising by the inverted latent, whatever noise the sampler added. Exact for Euler
and DDIM, first order for other samplers. The step's regular model evaluation still runs
(its result is replaced): Forge has no hook that could skip it.
"""
import math

import torch

from ....attention.cross_maps import ReferenceMaps
from ....attention.layers import is_unet, unet_layers
from ....attention.model_calls import unrouted
from ....attention.router import Method, step_context
from ....guidance import pix2pix_zero as p2pz
from ....methods.pix2pix_zero import comparing, inversion_settings, recording
from .grad import gradient_forward
from .params import method_key
from .router import has_method, host, install, modifier_step, post_cfg_last
from ..webui_text import one_window_sentences

NAME = "Pix2Pix-Zero"


def apply_pix2pix_zero(patcher, source, target, guidance_amount, seed, lambda_auto_corr, lambda_kl,
                       regularization_steps, auto_corr_rolls, init_latent=None, encode=None, sigmas=None,
                       map_dtype=torch.float16, **_host):
    diffusion_model = patcher.model.diffusion_model
    if not is_unet(diffusion_model):
        raise ValueError(f"{NAME}: {type(diffusion_model).__name__} is not a UNet model; this method needs the "
                         "cross-attention of a UNet (SD1.x, SD2.x, SDXL).")
    if init_latent is None:
        raise ValueError(f"{NAME} edits an img2img init image (params['init_latent']); it is off in txt2img.")
    if encode is None:
        raise ValueError(f"{NAME}: no text encoder; the WebUI script passes params['encode'] (texts -> conditioning, "
                         "like sd_model.get_learned_conditioning).")
    if has_method(patcher, "panorama."):
        raise ValueError(PANORAMA_REFUSAL)
    direction = p2pz.edit_direction(_encode(encode, source, "source"), _encode(encode, target, "target"))
    settings = inversion_settings(lambda_auto_corr, lambda_kl, regularization_steps, auto_corr_rolls)
    m = patcher.clone()
    key = method_key(m, "p2pz")
    install(m, Method(key), sigmas)
    editor = _Editor(key, direction, float(guidance_amount), settings, int(seed), init_latent,
                     unet_layers(diffusion_model), map_dtype)
    m.model_options["conditioning_modifiers"] = m.model_options["conditioning_modifiers"] + [editor.step]
    m.set_model_sampler_post_cfg_function(editor.result)
    return m


PANORAMA_REFUSAL = (f"{NAME} cannot run together with the panorama on Forge/reForge (it inverts and edits the whole "
                    "latent, the panorama evaluates windows). Turn one of them off.")


def _encode(encode, text, name):
    return one_window_sentences(encode(p2pz.sentences(text, name)), NAME, name)


def _edit_conds(conds, direction):
    """The conds with the direction added to their cross-attention text."""
    out = []
    for c in conds:
        model_conds = dict(c.get("model_conds", {}))
        text = model_conds.get("c_crossattn")
        if text is None or not hasattr(text, "_copy_with"):
            raise ValueError(f"{NAME}: this model's conditioning has no cross-attention text to add the direction to.")
        model_conds["c_crossattn"] = text._copy_with(p2pz.add_direction(text.cond, direction))
        out.append({**c, "model_conds": model_conds})
    return out


class _Editor:
    def __init__(self, key, direction, amount, settings, seed, init_latent, layers, map_dtype):
        self.key, self.direction, self.amount, self.settings, self.seed = key, direction, amount, settings, seed
        self.init_latent, self.layers, self.map_dtype = init_latent, layers, map_dtype
        self.held = 0   # most bytes of reference maps held at once

    def __deepcopy__(self, memo):
        return self

    def _call(self, model, conds, x, sigma, model_options, attend=None):
        """One model call (denoised) of conds at x, no router role; every attn2 layer through `attend`."""
        options = unrouted(model_options, 1, self.layers, attend)
        return host(model_options).calc(model, [conds], x, sigma, options)[0]

    def _inverted(self, model, cond, x, sigmas, model_options):
        x0 = self.init_latent() if callable(self.init_latent) else self.init_latent
        if tuple(x0.shape) != tuple(x.shape):
            raise ValueError(f"{NAME}: the init latent is {tuple(x0.shape)} but the sampler's latent is "
                             f"{tuple(x.shape)}; use one init image per generated image.")
        x0 = x0.to(x.device, x.dtype)
        h = host(model_options)
        s_in = x.new_ones([x.shape[0]])
        denoise = lambda xe, s: self._call(model, cond, xe, s_in * s, model_options)
        c_in = lambda s: h.input_scale(model, torch.tensor([s]))
        return p2pz.invert(x0, sigmas, denoise, self.settings, p2pz.roll_generators(self.seed, x.shape[0]), c_in)

    def step(self, model, x, timestep, uncond, cond, cond_scale, model_options, seed):
        """Conditioning modifier: the whole step, its result kept for the post-CFG function."""
        unchanged = model, x, timestep, uncond, cond, cond_scale, model_options, seed
        found = modifier_step(model_options, cond, f"{NAME}: the run's sigmas are unknown (the WebUI script passes "
                                                   "params['sigmas']; a timestep sampler has none); it does nothing. "
                                                   "Pick Euler.")
        if found is None:
            return unchanged
        ctx, sigmas = found
        sigmas = [float(s) for s in sigmas]
        state = ctx.run.setdefault(self.key, {}) if ctx.run is not None else {}
        now = float(timestep.flatten()[0])
        nxt = sigmas[ctx.step + 1] if ctx.step + 1 < len(sigmas) else 0.0
        with torch.no_grad():
            if "x_ref" not in state:
                state["x_ref"] = x_edit = self._inverted(model, cond, x, sigmas[ctx.step:], model_options)
            else:
                x_edit = x
            d_edit, state["x_ref"] = self._edit(model, x, x_edit, state["x_ref"], timestep, uncond, cond,
                                                float(cond_scale), model_options, now, nxt)
        ctx.captures[self.key] = d_edit
        model_options = post_cfg_last(model_options, self.result)
        return model, x, timestep, uncond, cond, cond_scale, model_options, seed

    def result(self, args):
        ctx = step_context(args["model_options"])
        out = ctx.captures.get(self.key) if ctx is not None else None
        return args["denoised"] if out is None else out.to(args["denoised"].dtype)

    def _edit(self, model, x, x_edit, x_ref, timestep, uncond, cond, cfg, model_options, now, nxt):
        """(the prediction that takes the sampler's x to the edit's next latent, the reference's next latent)."""
        guided = uncond is not None and not math.isclose(cfg, 1.0)
        edit = _edit_conds(cond, self.direction)
        maps = ReferenceMaps(self.map_dtype)
        call = lambda conds, xx, attend=None: self._call(model, conds, xx, timestep, model_options, attend)

        def held(probs):
            self.held = max(self.held, maps.nbytes())

        d_ref = call(cond, x_ref, recording(maps, "cond", held))
        if guided:
            d_ref_u = call(uncond, x_ref, recording(maps, "uncond", held))
            d_ref = d_ref_u + cfg * (d_ref - d_ref_u)
        ref_next = d_ref + (x_ref - d_ref) * (nxt / now)   # Euler (= DDIM) step of the reference
        halves, loss = (2 if guided else 1), {}

        def loss_fn(xu, xc):
            call(edit, xc, comparing(maps, "cond", halves, loss))
            if guided:
                call(uncond, xu, comparing(maps, "uncond", halves, loss))
            return loss["value"]

        c_in = host(model_options).input_scale(model, timestep[:1])
        with gradient_forward(model, model_options):
            x_u, x_c = p2pz.guided_latents(x_edit, loss_fn, self.amount, c_in)
        if not guided:
            x_u = x_c
        out = p2pz.cond_at(x_u, x_c, call(edit, x_c))
        if guided:
            d_u = call(uncond, x_u)
            out = d_u + cfg * (out - d_u)
        return p2pz.edit_denoised(x, x_u, out, now, nxt), ref_next
