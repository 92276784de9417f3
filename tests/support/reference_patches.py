"""Unbatched SAG and PAG for the host tests, written the plain way ComfyUI's built-in
nodes are (separate extra model calls, attn1 replace patches), but with the pack's
core math. The nodes, which batch and route through the router, must equal these."""
import comfy.model_patcher
import comfy.samplers

from attnguide.attention.math import attention_with_key_mass, identity_attention
from attnguide.guidance import sag
from attnguide.guidance.pag import pag_guidance, pag_scale
from attnguide.guidance.rescale import rescale_denoised


def ref_sag(model, scale=0.75, blur_sigma=1.0, threshold=1.0, layer=("middle", 0, 0)):
    m = model.clone()
    seen = {}

    def capture(q, k, v, extra):
        out, mass = attention_with_key_mass(q, k, v, extra["n_heads"])
        labels = extra["cond_or_uncond"]
        b = q.shape[0] // len(labels)
        for i, label in enumerate(labels):
            seen[label] = (mass[i * b:(i + 1) * b], tuple(extra["activations_shape"][-2:]))
        return out

    def post_cfg(args):
        use_uncond = args["cond_scale"] > 1
        pred = args["uncond_denoised"] if use_uncond else args["cond_denoised"]
        mass, grid = seen[1 if use_uncond else 0]
        x = args["input"]
        mask = sag.attention_mask(mass, grid, x.shape[-2:], threshold)
        degraded = sag.degrade(pred, mask, blur_sigma)
        (deg,) = comfy.samplers.calc_cond_batch(args["model"], [args["uncond"] if use_uncond else args["cond"]],
                                                sag.degraded_input(x, pred, degraded), args["sigma"], args["model_options"])
        return sag.sag_guidance(args["denoised"], degraded, deg, scale)

    m.set_model_attn1_replace(capture, *layer)
    m.set_model_sampler_post_cfg_function(post_cfg)
    return m


def ref_pag(model, scale=3.0, adaptive_scale=0.0, layers=None, rescale=0.0):
    """layers: (kind, block, depth) triples; default every depth of the middle block."""
    from attnguide.attention.layers import unet_layers
    if layers is None:
        layers = [tuple(l) for l in unet_layers(model.model.diffusion_model) if l.kind == "middle"]
    m = model.clone()

    def perturbed(q, k, v, extra):
        return identity_attention(q, k, v, extra["n_heads"])

    def post_cfg(args):
        mo = dict(args["model_options"])  # set_model_options_patch_replace edits the dict it gets
        for layer in layers:
            mo = comfy.model_patcher.set_model_options_patch_replace(mo, perturbed, "attn1", *layer)
        (ptb,) = comfy.samplers.calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"], mo)
        t = args["model"].model_sampling.timestep(args["sigma"]).flatten()[0]
        out = pag_guidance(args["denoised"], args["cond_denoised"], ptb, pag_scale(scale, adaptive_scale, t))
        if rescale > 0 and args["cond_scale"] > 1:
            out = rescale_denoised(args["input"], args["sigma"], out, args["cond_denoised"], rescale)
        return out

    m.set_model_sampler_post_cfg_function(post_cfg)
    return m


class RefSEGAGuider(comfy.samplers.CFGGuider):
    """SEGA the plain way: a guider (like ComfyUI's PerpNeg) that evaluates each concept in a
    model call of its own, counts steps itself and keeps the momentum on the guider. CFG and the
    model's post-CFG functions run first, then the edit, as the node stacks after other methods."""

    def set_sega(self, positive, negative, concepts, cfg, momentum_scale=0.1, momentum_beta=0.4):
        """concepts: [(CONDITIONING, guidance.sega.Concept)], conditioning complete (pooled, sizes)."""
        self.inner_set_conds({"positive": positive, "negative": negative,
                              **{f"concept{i}": c for i, (c, _) in enumerate(concepts)}})
        self.concepts = [c for _, c in concepts]
        self.cfg, self.momentum_scale, self.momentum_beta = cfg, momentum_scale, momentum_beta
        self.step, self.momentum, self.calls = 0, None, []

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        from attnguide.guidance.sega import sega_denoised
        cond, uncond = self.conds["positive"], self.conds["negative"]
        cond_d, uncond_d = comfy.samplers.calc_cond_batch(self.inner_model, [cond, uncond], x, timestep, model_options)
        denoised = comfy.samplers.cfg_function(self.inner_model, cond_d, uncond_d, self.cfg, x, timestep,
                                               model_options=model_options, cond=cond, uncond=uncond)
        concept_d = [comfy.samplers.calc_cond_batch(self.inner_model, [self.conds[f"concept{i}"]], x, timestep,
                                                    model_options)[0] for i in range(len(self.concepts))]
        out, self.momentum = sega_denoised(x, timestep, denoised, uncond_d, concept_d, self.concepts, self.step,
                                           self.momentum, self.momentum_scale, self.momentum_beta)
        self.step += 1
        return out
