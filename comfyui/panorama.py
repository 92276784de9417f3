"""MultiDiffusion panorama: the model denoises overlapping windows of the latent and their
denoised predictions are averaged at every step (guidance.panorama).

Three composable wrappers, no model_function_wrapper:
  PREDICT_NOISE (outermost): crops the windows, evaluates a batch of windows as one batch
      of the whole guided model (CFG and every post-CFG method: SAG, PAG, SEGA run per
      window, with their own per-step state), and blends the results.
  CALC_COND_BATCH (inside the router's): gives each window its crop of per-pixel
      conditioning: masks, ControlNet/T2I hints, concat latents (inpainting models).
  APPLY_MODEL: replaces the input of region prompts by their bootstrapped input.
"""
import copy
import logging

import comfy.conds
import comfy.patcher_extension
import comfy.utils
import torch

from ..attention.router import RUN_KEY, Method
from ..attention.step_window import Schedule, step_index
from ..guidance import panorama as pano
from ..methods.build import Target
from ..methods.panorama import build
from . import common
from .router import install

WRAPPER_KEY = "attnguide_panorama"

CALL_KEY = "attnguide_panorama_call"

BOOT_KEY = "attnguide_panorama_bootstrap"

REGION_KEY = "attnguide_region"

WP = comfy.patcher_extension.WrappersMP

_LOG = logging.getLogger("attnguide")

def native_window(model):
    """Latent size the model was trained at: 64 for SD1.x/SD2.x, 166 (1328 px) for Qwen-Image, 128 for
    SDXL, SD3 and Flux-family."""
    if type(model.model.latent_format).__name__ == "SD15":
        return 64
    return 166 if type(model.model).__name__ == "QwenImage" else 128

def downscale(model):
    return int(getattr(model.model.latent_format, "spacial_downscale_ratio", 8))

def apply_panorama(model, params):
    """A clone of `model` that denoises windows of the latent (MultiDiffusion); params: the node's inputs."""
    ratio = downscale(model)
    plan = build(Target("panorama", latent_scale=ratio, native_window=native_window(model)), **params)
    m = model.clone()
    for kind in (WP.PREDICT_NOISE, WP.CALC_COND_BATCH, WP.APPLY_MODEL):
        if m.get_wrappers(kind, WRAPPER_KEY):
            _LOG.info("attnguide: the model already had a panorama; the new settings replace it")
            m.remove_wrappers_with_key(kind, WRAPPER_KEY)
    # The router's wrappers must exist before ours: its CALC_COND_BATCH then runs outside
    # ours (methods add rows, then every row is cropped) whatever order the nodes come in.
    install(m, Method(common.method_key(m, "panorama")))
    tiler = _Tiler(plan.window, plan.stride, plan.wrap, plan.weights, plan.batch, ratio)
    m.add_wrapper_with_key(WP.PREDICT_NOISE, WRAPPER_KEY, tiler.predict_noise)
    outer = m.wrappers[WP.PREDICT_NOISE]
    m.wrappers[WP.PREDICT_NOISE] = {WRAPPER_KEY: outer.pop(WRAPPER_KEY), **outer}
    m.add_wrapper_with_key(WP.CALC_COND_BATCH, WRAPPER_KEY, tiler.calc_cond_batch)
    m.add_wrapper_with_key(WP.APPLY_MODEL, WRAPPER_KEY, _bootstrap_rows)
    return m


class _Tiler:
    def __init__(self, window, stride, wrap, weights, batch, ratio):
        self.window, self.stride, self.wrap = window, stride, wrap
        self.weights, self.batch, self.ratio = weights, batch, ratio

    def __deepcopy__(self, memo):
        return self

    def predict_noise(self, executor, x, timestep, model_options={}, seed=None):
        height, width = x.shape[-2:]
        windows = pano.layout(height, width, self.window, self.stride, self.wrap)
        weight = pano.window_weight(windows[0].height, windows[0].width, self.weights)
        to = model_options.get("transformer_options", {})
        step = _Step(x, timestep, to.get("sample_sigmas"), seed)
        run = to.get(RUN_KEY)
        blend = pano.Blend(x)
        for i in range(0, len(windows), self.batch):
            group = windows[i:i + self.batch]
            call = _WindowCall(group, step, self.ratio)
            window_to = {**to, CALL_KEY: call}
            if run is not None:  # state kept across steps (SEGA's momentum) is per window batch
                window_to[RUN_KEY] = run.setdefault((WRAPPER_KEY, i), {})
            options = {**model_options, "transformer_options": window_to}
            t = timestep.repeat(len(group)) if torch.is_tensor(timestep) and timestep.ndim else timestep
            blend.add(executor(pano.crop(x, group), t, options, seed), group, weight)
        return blend.result()

    def calc_cond_batch(self, executor, model, conds, x_in, timestep, model_options):
        to = model_options.get("transformer_options", {})
        call = to.get(CALL_KEY)
        if call is None:
            return executor(model, conds, x_in, timestep, model_options)
        windowed, boot = call.window_conds(conds, model)
        if boot:
            model_options = {**model_options, "transformer_options": {**to, BOOT_KEY: boot}}
        return executor(model, windowed, x_in, timestep, model_options)

class _Step:
    """One model evaluation of the sampler over the full latent."""

    def __init__(self, x, timestep, sample_sigmas, seed):
        self.shape = tuple(x.shape)
        self.sigma = timestep
        sigma = float(timestep.flatten()[0]) if torch.is_tensor(timestep) else float(timestep)
        self.step, self.steps = step_index(sample_sigmas, sigma) if sample_sigmas is not None else (0, 1)
        self.sigma_value = sigma
        self.seed = 0 if seed is None else int(seed)
        self.backgrounds = {}

    def background(self, uuid, model):
        """The flat noised background of one region for this step (full latent size)."""
        if uuid not in self.backgrounds:
            b, c = self.shape[:2]
            g = torch.Generator().manual_seed(hash((self.seed, self.step, len(self.backgrounds))) & 0xFFFFFFFF)
            factors = getattr(model.latent_format, "latent_rgb_factors", None)
            if factors is not None and len(factors) == c:
                rgb = torch.rand(b, 3, generator=g) * 2 - 1
                bias = getattr(model.latent_format, "latent_rgb_factors_bias", None)
                colour = pano.colour_latent(rgb, torch.tensor(factors, dtype=torch.float32),
                                            None if bias is None else torch.tensor(bias, dtype=torch.float32))
            else:
                colour = torch.randn(b, c, generator=g)
            noise = torch.randn(self.shape, generator=g)
            flat = colour[:, :, None, None].expand(self.shape)
            sigma = self.sigma[:b] if torch.is_tensor(self.sigma) and self.sigma.ndim else torch.full((b,), self.sigma_value)
            self.backgrounds[uuid] = model.model_sampling.noise_scaling(sigma.float().cpu(), noise, flat)
        return self.backgrounds[uuid]

class _WindowCall:
    """A batch of windows evaluated together: crops the full-size conditioning for them."""

    def __init__(self, windows, step, ratio):
        self.windows, self.step, self.ratio = windows, step, ratio

    def __deepcopy__(self, memo):
        return self

    def crop(self, t, windows=None):
        """Crop of a full-size (batch, ..., H, W) tensor for every window, as the stacked input."""
        return pano.crop(pano.tile_batch(t, self.step.shape[0]), windows or self.windows)

    def window_conds(self, conds, model):
        controls, boot = {}, {}
        out = []
        for entries in conds:
            if entries is None:
                out.append(None)
                continue
            kept = (self._entry(c, model, controls, boot) for c in entries)
            out.append([c for c in kept if c is not None])
        return out, boot

    def _entry(self, c, model, controls, boot):
        height, width = self.step.shape[-2:]
        if "area" in c:
            raise ValueError("Panorama: a conditioning with an area (ConditioningSetArea, or a mask with "
                             "set_cond_area 'mask bounds') cannot be split into windows. Use a mask instead "
                             "(ConditioningSetMask with set_cond_area 'default', or AttnGuide Panorama Region).")
        c = dict(c)
        region = c.get(REGION_KEY)
        if region is not None and not pano.aspect_matches(region["mask_hw"], (height, width)):
            mh, mw = region["mask_hw"]
            raise ValueError(f"Panorama Region: the mask is {mw}x{mh} but the image is {width * self.ratio}x"
                             f"{height * self.ratio} px; a mask of another aspect would be stretched. "
                             "Give a mask of the image's aspect (any resolution).")
        if "mask" in c:
            mask = c["mask"]
            if tuple(mask.shape[-2:]) != (height, width):
                raise ValueError(f"Panorama: a conditioning mask is {tuple(mask.shape[-2:])}, the latent {(height, width)}")
            cropped = self.crop(mask)
            if not bool(cropped.any()):
                return None  # no weight anywhere in these windows
            c["mask"] = cropped
            if region is not None and Schedule(0.0, region["bootstrap"]).active(self.step.step, self.step.steps,
                                                                                 self.step.sigma_value):
                bg = self.crop(self.step.background(c["uuid"], model)).to(cropped.device, torch.float32)
                boot[c["uuid"]] = (cropped[:, None].float(), bg)
        if c.get("control") is not None:
            c["control"] = self._control(c["control"], controls)
        model_conds = c.get("model_conds")
        if model_conds:
            c["model_conds"] = {k: self._model_cond(v) for k, v in model_conds.items()}
        return c

    def _model_cond(self, cond):
        if isinstance(cond, comfy.conds.CONDNoiseShape) and tuple(cond.cond.shape[-2:]) == self.step.shape[-2:]:
            return cond._copy_with(self.crop(cond.cond))
        return cond

    def _control(self, control, cache):
        """A copy of a ControlNet/T2I-Adapter chain whose hints are these windows' crops."""
        if control is None:
            return None
        if id(control) in cache:
            return cache[id(control)]
        height, width = self.step.shape[-2:]
        ratio = control.compression_ratio
        if getattr(control, "vae", None) is not None:
            ratio *= control.vae.spacial_compression_encode()
        pixels = [pano.Window(w.top * ratio, w.left * ratio, w.height * ratio, w.width * ratio) for w in self.windows]

        def crop_image(image):
            if image is None or image.ndim != 4:
                return image
            full = comfy.utils.common_upscale(image, width * ratio, height * ratio, control.upscale_algorithm, "center")
            return self.crop(full, pixels)

        c = copy.copy(control)  # keeps what the sampler's pre_run set (timestep range, model sampling)
        c.cond_hint, c.cond_hint_original = None, crop_image(control.cond_hint_original)
        if hasattr(c, "control_input"):
            c.control_input = None
        if getattr(control, "extra_concat_orig", None):
            c.extra_concat_orig = [crop_image(e) for e in control.extra_concat_orig]
        c.previous_controlnet = self._control(control.previous_controlnet, cache)
        cache[id(control)] = c
        return c

def _bootstrap_rows(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
    boot = transformer_options.get(BOOT_KEY)
    uuids = transformer_options.get("uuids")
    if boot and uuids and x.shape[0] % len(uuids) == 0 and any(u in boot for u in uuids):
        parts = list(x.split(x.shape[0] // len(uuids)))
        for j, u in enumerate(uuids):
            if u in boot:
                mask, background = boot[u]
                parts[j] = pano.bootstrap_input(parts[j], mask.to(x), background.to(x))
        x = torch.cat(parts)
    return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
