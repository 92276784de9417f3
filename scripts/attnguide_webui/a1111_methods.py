"""The methods on plain A1111: each installs an attention.router Method on the pass's
Session and gives its guidance as fn(StepData) -> denoised, composed from guidance/ and
attention/ the way the ComfyUI nodes compose them (nodes/sag.py, nodes/pag.py)."""
import torch

from ...attention.layers import LayerSelectionError, is_unet, parse_layers, unet_layers
from ...attention.math import attention_with_key_mass
from ...attention.router import COND, UNCOND, AttentionHook, Method
from ...attention.step_window import Schedule
from ...guidance import sag
from ...guidance.pag import pag_guidance, pag_scale
from ...guidance.rescale import rescale_denoised
from ...guidance.schedule import step_at
from ...guidance.sega import Concept, sega_denoised
from ...methods.pag import AUTO_LAYERS, pag_method
from ...methods.sag import auto_layer


PAG_AUTO, SAG_AUTO = AUTO_LAYERS["unet"], auto_layer("unet", ())


class NotServed(ValueError):
    """A method that cannot run on this A1111 model or sampler, with the reason for the user."""


def _layers(session, text, name, title, auto):
    unet = session.unet
    if not is_unet(unet):
        raise NotServed(f"{title}: {type(unet).__name__} is not a UNet; this method needs the self-attention of a UNet "
                        "(SD1.x, SD2.x, SDXL).")
    try:
        return parse_layers(text, unet_layers(unet), name, auto)
    except LayerSelectionError as e:
        raise ValueError(f"{title}: {e}") from None


def install_sag(session, scale, blur_sigma, threshold, layer, start_percent, end_percent):
    title = "Self-Attention Guidance (AttnGuide)"
    selected = _layers(session, layer, "layer", title, SAG_AUTO)
    if len(selected) != 1:
        raise ValueError(f"{title}: layer: SAG reads one layer, '{layer}' selects {len(selected)} "
                         f"({', '.join(map(str, selected))}). Name one, e.g. '{selected[0]}'.")
    if scale == 0:
        return
    key = session.method_key("sag")
    branch = lambda ctx: {UNCOND} if ctx.cfg > 1 else {COND}

    def capture(q, k, v, heads, ctx, options, next):
        out, mass = attention_with_key_mass(q, k, v, heads)
        rows = ctx.captures.setdefault(key, {})
        for label, row in zip(options["cond_or_uncond"], mass):
            rows[label] = row
        return out

    def post(step):
        which = UNCOND if step.ctx.cfg > 1 else COND
        captured = step.ctx.captures.get(key, {})
        rows = step.branch_rows(which)
        if any(r not in captured for r in rows):
            return step.denoised
        mass = torch.stack([captured[r] for r in rows])
        pred = step.uncond_denoised if which == UNCOND else step.first_cond_denoised()
        x = step.x
        latent_hw = tuple(x.shape[-2:])
        mask = sag.attention_mask(mass, sag.grid_shape(mass.shape[1], latent_hw), latent_hw, threshold)
        degraded = sag.degrade(pred, mask.to(pred.dtype), blur_sigma)
        degraded_pred = step.run_extra(which, sag.degraded_input(x, pred, degraded))
        return sag.sag_guidance(step.denoised, degraded, degraded_pred, scale)

    session.add(Method(key, Schedule(start_percent, end_percent), (AttentionHook(frozenset(selected), branch, capture),)),
                post)


def install_pag(session, scale, adaptive_scale, layers, rescale, start_percent, end_percent):
    selected = _layers(session, layers, "layers", "Perturbed-Attention Guidance (AttnGuide)", PAG_AUTO)
    if scale == 0:
        return
    key = session.method_key("pag")

    def post(step):
        perturbed = step.block(key)
        if perturbed is None:
            return step.denoised
        s = pag_scale(scale, adaptive_scale, step.timestep) if adaptive_scale > 0 else scale
        out = pag_guidance(step.denoised, step.cond_denoised, perturbed, s)
        if rescale > 0 and step.ctx.cfg > 1:
            out = rescale_denoised(step.x, step.sigma, out, step.cond_denoised, rescale)
        return out

    session.add(pag_method(key, "unet", selected, start_percent, end_percent), post)


def install_sega(session, concepts, momentum_scale, momentum_beta):
    """concepts: [{prompt, direction, scale, warmup, cooldown, timing, threshold, weight}], prompts as text,
    encoded here with the checkpoint's text encoder for every image of the batch."""
    if not concepts:
        raise ValueError("Semantic Guidance (AttnGuide): no concepts. Type at least one concept prompt.")
    for c in concepts:  # the core's checks, with its messages, before anything is installed
        _concept(c, 100)
    key = session.method_key("sega")
    roles = [f"{key}.concept{i}" for i in range(len(concepts))]
    texts = [session.encode(c["prompt"]) for c in concepts]

    def extra_rows(ctx, conds):
        return list(zip(roles, texts))

    def post(step):
        predicted = [step.image_rows(role) for role in roles]
        if any(p is None for p in predicted):
            return step.denoised
        state = session.run_state(key)
        out, state["momentum"] = sega_denoised(step.x, step.sigma, step.denoised, step.uncond_denoised, predicted,
                                               [_concept(c, step.ctx.steps) for c in concepts], step.ctx.step,
                                               state.get("momentum"), momentum_scale, momentum_beta)
        return out

    session.add(Method(key, extra_rows=extra_rows), post)


def _concept(c, steps):
    return Concept(scale=c["scale"], reverse=c["direction"] == "remove", warmup=step_at(c["warmup"], c["timing"], steps),
                   cooldown=None if c["cooldown"] < 0 else step_at(c["cooldown"], c["timing"], steps),
                   threshold=c["threshold"], weight=c["weight"])


def install_panorama(session, **params):
    from .a1111_panorama import install
    install(session, **params)


def install_attend_excite(session, **params):
    from .a1111_excite import install
    install(session, **params)


def install_pix2pix_zero(session, **params):
    from .a1111_pix2pix_zero import install
    install(session, **params)


INSTALL = {"sag": install_sag, "pag": install_pag, "sega": install_sega, "panorama": install_panorama,
           "attend_excite": install_attend_excite, "pix2pix_zero": install_pix2pix_zero}


def install(session, method, params):
    """Install `method` with node-keyed params on the session; NotServed if this adapter lacks it."""
    if method not in INSTALL:
        raise NotServed(f"{method}: not available on plain A1111 in this version of AttnGuide "
                        "(it runs on Forge/reForge and in ComfyUI).")
    INSTALL[method](session, **params)
