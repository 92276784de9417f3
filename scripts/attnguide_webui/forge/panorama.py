"""MultiDiffusion panorama on a Forge/reForge patcher (guidance.panorama; the ComfyUI node is
comfyui/panorama.py). Like the node's PREDICT_NOISE wrapper, every model evaluation of the sampler
is cut into overlapping windows, each window batch runs as one whole guided evaluation (the
methods' conditioning modifiers, CFG and every post-CFG method: SAG, PAG, SEGA and
Attend-and-Excite run per window, each window batch with its own step context and per-run
state), and the windows' denoised predictions are averaged per position.

The A1111 layer has no hook around a whole evaluation, so the panorama is a conditioning
modifier that does the windowed evaluations itself (the host's own sampling_function_inner,
host.Host.evaluate) and then lets the host's evaluation of the full latent pass through:
it returns model options without pre-/post-CFG functions whose UNet wrapper answers every call
with the blended prediction (router.RESULT_KEY), so CFG of equal cond and uncond gives it
back unchanged. The methods' modifiers do nothing outside a window (router.modifier_step).
"""
from ....attention.router import ROUTER_KEY, Method, step_context
from ....guidance import panorama as pano
from ....methods.build import Target
from ....methods.panorama import SPEC, build
from .params import method_key
from .pix2pix_zero import PANORAMA_REFUSAL
from .router import (RESULT_KEY, WINDOW_KEY, Window, has_method, host, install, open_step, runs_per_window,
                           schedule_of)

LATENT_SCALE = 8  # pixels per latent position of the SD1.x/SD2.x/SDXL VAEs
RUN_KEY = "attnguide_panorama"


def native_window(patcher):
    """Latent size the model was trained at: 128 for SDXL-type UNets (class-embedding input), else 64."""
    return 128 if getattr(patcher.model.diffusion_model, "num_classes", None) is not None else 64


def apply_panorama(patcher, sigmas=None, **params):
    plan = build(Target("panorama", latent_scale=LATENT_SCALE, native_window=native_window(patcher)),
                 **SPEC.values(params))
    if has_method(patcher, "p2pz."):
        raise ValueError("Panorama: " + PANORAMA_REFUSAL)
    m = patcher.clone()
    install(m, Method(method_key(m, "panorama")), sigmas)
    mo = m.model_options
    mo["conditioning_modifiers"] = [f for f in mo["conditioning_modifiers"] if not isinstance(f, Tiler)] + [
        Tiler(plan.window, plan.stride, plan.wrap, plan.weights, plan.batch)]
    return m


class Tiler:
    """Conditioning modifier: the windowed evaluation (see the module docstring)."""

    def __init__(self, window, stride, wrap, weights, batch):
        self.window, self.stride, self.wrap, self.weights, self.batch = window, stride, wrap, weights, batch

    def __deepcopy__(self, memo):
        return self

    def __call__(self, model, x, timestep, uncond, cond, cond_scale, model_options, seed):
        unchanged = model, x, timestep, uncond, cond, cond_scale, model_options, seed
        to = model_options.get("transformer_options", {})
        outer, router = step_context(model_options), to.get(ROUTER_KEY)
        if outer is None or router is None or WINDOW_KEY in to:
            return unchanged
        height, width = x.shape[-2:]
        windows = pano.layout(height, width, self.window, self.stride, self.wrap)
        weight = pano.window_weight(windows[0].height, windows[0].width, self.weights)
        modifiers = [f for f in model_options.get("conditioning_modifiers", []) if runs_per_window(f)]
        sigmas = schedule_of(model_options)
        blend = pano.Blend(x)
        for i in range(0, len(windows), self.batch):
            group = windows[i:i + self.batch]
            run = outer.run.setdefault((RUN_KEY, i), {}) if outer.run is not None else None  # per window batch
            window_to = open_step(to, router, timestep, sigmas, cond_scale, run,
                                  **{WINDOW_KEY: Window(group, height, width)})
            args = (model, pano.crop(x, group), timestep.repeat(len(group)), uncond, cond, cond_scale,
                    {**model_options, "transformer_options": window_to}, seed)
            for modifier in modifiers:
                args = modifier(*args)
            blend.add(host(model_options).evaluate(*args), group, weight)
        through = {k: v for k, v in model_options.items() if k != "sampler_cfg_function"}
        through.update(sampler_pre_cfg_function=[], sampler_post_cfg_function=[],
                       transformer_options={**to, RESULT_KEY: blend.result()})
        return model, x, timestep, uncond, cond, cond_scale, through, seed
