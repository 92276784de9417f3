"""Attend-and-Excite on a Forge/reForge patcher (the ComfyUI node's behaviour, nodes/attend_excite.py).

A conditioning modifier (after the router's, which opens the step) moves the latent before
the model evaluation of each step in the window: per image, grad-enabled conditional
forwards with the cross-attention of one level captured by attn2 replace patches that exist
only in that forward. The sampler keeps its own x, so a post-CFG function, run last, hands it
the denoised prediction that carries the move to its next state
(guidance.latent_update.moved_latent_denoised): exact for Euler and DDIM.
"""
from ....attention.excite_forward import map_evaluator
from ....attention.layers import is_unet
from ....attention.router import Method, step_context
from ....attention.unet_levels import cross_attention_levels, grid
from ....guidance.excite_inputs import find_words
from ....guidance.latent_update import moved_latent_denoised
from ....methods.attend_excite import SPEC, build, excite_images
from ....methods.build import Target
from .grad import gradient_forward
from .params import method_key
from .router import host, install, modifier_step, post_cfg_last

NAME = "Attend-and-Excite"


def apply_attend_excite(patcher, prompt="", tokenize=None, sigmas=None, **params):
    diffusion_model = patcher.model.diffusion_model
    if not is_unet(diffusion_model):
        raise ValueError(f"{NAME}: {type(diffusion_model).__name__} is not a UNet model; this method needs the "
                         "cross-attention of a UNet (SD1.x, SD2.x, SDXL).")
    plan = build(Target("excite", levels=cross_attention_levels(diffusion_model)),
                 **SPEC.values(params),
                 word_indices=lambda words: _word_indices(tokenize, prompt, words))
    m = patcher.clone()
    key = method_key(m, "excite")
    install(m, Method(key), sigmas)
    exciter = _Exciter(key, plan)
    m.model_options["conditioning_modifiers"] = m.model_options["conditioning_modifiers"] + [exciter.move]
    m.set_model_sampler_post_cfg_function(exciter.carry_move)
    return m


def _word_indices(tokenize, prompt, words):
    if tokenize is None:
        raise ValueError(f"{NAME}: no tokenizer to find the words with; the WebUI script passes params['tokenize'] "
                         "(or give token_indices).")
    return find_words(tokenize, prompt, words, " (the words are looked up in the generation's prompt)")


class _Exciter:
    runs_per_window = True  # with the panorama, each window batch is moved on its own (as the node)

    def __init__(self, key, plan):
        self.key, self.plan, self.layers, self.downscale = key, plan, plan.layers, plan.downscale

    def __deepcopy__(self, memo):
        return self

    def settings(self, steps):
        return self.plan.settings(steps)

    def move(self, model, x, timestep, uncond, cond, cond_scale, model_options, seed):
        """Conditioning modifier: x moved for this step, and the post-CFG correction put last."""
        unchanged = model, x, timestep, uncond, cond, cond_scale, model_options, seed
        found = modifier_step(model_options, cond, f"{NAME}: the run's sigmas are unknown (the WebUI script passes "
                                                   "params['sigmas']); it does nothing.")
        if found is None:
            return unchanged
        ctx, sigmas = found
        settings = self.settings(ctx.steps)
        if not settings.runs_at(ctx.step):
            return unchanged
        moved = self._excite(model, cond, x, timestep, model_options, ctx, settings)
        ctx.captures[self.key] = (x, moved, float(timestep.flatten()[0]), float(sigmas[ctx.step + 1]))
        model_options = post_cfg_last(model_options, self.carry_move)
        return model, moved, timestep, uncond, cond, cond_scale, model_options, seed

    def carry_move(self, args):
        ctx = step_context(args["model_options"])
        record = ctx.captures.get(self.key) if ctx is not None else None
        if record is None:
            return args["denoised"]
        x, moved, sigma, sigma_next = record
        return moved_latent_denoised(x, moved, args["denoised"], sigma, sigma_next)

    def _excite(self, model, cond, x, timestep, model_options, ctx, settings):
        """x moved by Attend-and-Excite, every image on its own (batch-1 conditional forwards)."""
        h, w = grid(x.shape[-2], x.shape[-1], self.downscale)
        sigma = timestep[:1]
        c_in = host(model_options).input_scale(model, sigma)
        evaluate = map_evaluator(host(model_options).calc, model, cond, sigma, model_options, self.layers, h, w,
                                 self.downscale, settings.indices, NAME)
        moved, _ = excite_images(x, ctx.step, ctx.steps, c_in, settings, evaluate,
                                 gradient_forward(model, model_options))
        return moved
