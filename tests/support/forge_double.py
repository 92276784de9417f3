"""The Forge/reForge sampling path, with a real ComfyUI standing in for ldm_patched.

Forge and reForge sample through the A1111 layer, not through ComfyUI's guider: per model
evaluation their `sampling_function` runs the patcher's conditioning modifiers, then
`sampling_function_inner` (cfg1 optimisation, Forge-style pre-CFG functions, one
`calc_cond_uncond_batch`, CFG, post-CFG functions with Forge's argument keys). No patcher
wrapper (OUTER_SAMPLE, PREDICT_NOISE, CALC_COND_BATCH) is called and "sample_sigmas" is not
in the options. `forge_sampling()` swaps that path in for ComfyUI's own sampling_function
while a test samples; the UNet, its attention patches, ComfyUI's calc_cond_batch (the
ldm_patched copy of which reForge runs) and the k-diffusion samplers stay ComfyUI's.

Mirrored host code (lllyasviel/stable-diffusion-webui-forge dfdcbab6,
backend/sampling/sampling_function.py):
  sampling_function        359-360  conditioning_modifiers(model, x, timestep, uncond, cond,
                                    cond_scale, model_options, seed) -> the same tuple
  sampling_function_inner  292-322
  calc_cond_uncond_batch   154      -> (cond_pred, uncond_pred); uncond_pred is zeros when
                                    uncond is None (its sums divided by a 1e-37 count)
reForge (Panchovix 3b56b268): modules_forge/forge_sampler.py:103 (conditioning modifiers),
ldm_patched/modules/samplers.py:357 (calc_cond_uncond_batch = calc_cond_batch([cond, uncond])).
"""
import contextlib
import math

import comfy.model_patcher
import comfy.samplers
import torch


def _calc_cond_uncond_batch(model, cond, uncond, x, timestep, model_options):
    cond_pred, uncond_pred = comfy.samplers.calc_cond_batch(model, [cond, uncond], x, timestep, model_options)
    return cond_pred, (torch.zeros_like(x) if uncond_pred is None else uncond_pred)


def _sampling_function_inner(model, x, timestep, uncond, cond, cond_scale, model_options, seed):
    edit_strength = sum(item.get("strength", 1) for item in cond)
    uncond_ = None if math.isclose(cond_scale, 1.0) and not model_options.get("disable_cfg1_optimization", False) else uncond
    for fn in model_options.get("sampler_pre_cfg_function", []):
        model, cond, uncond_, x, timestep, model_options = fn(model, cond, uncond_, x, timestep, model_options)
    cond_pred, uncond_pred = _calc_cond_uncond_batch(model, cond, uncond_, x, timestep, model_options)
    if "sampler_cfg_function" in model_options:
        args = {"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": cond_scale, "timestep": timestep,
                "input": x, "sigma": timestep, "cond_denoised": cond_pred, "uncond_denoised": uncond_pred,
                "model": model, "model_options": model_options}
        cfg_result = x - model_options["sampler_cfg_function"](args)
    elif not math.isclose(edit_strength, 1.0):
        cfg_result = uncond_pred + (cond_pred - uncond_pred) * cond_scale * edit_strength
    else:
        cfg_result = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    for fn in model_options.get("sampler_post_cfg_function", []):
        args = {"denoised": cfg_result, "cond": cond, "uncond": uncond, "model": model, "uncond_denoised": uncond_pred,
                "cond_denoised": cond_pred, "sigma": timestep, "model_options": model_options, "input": x}
        cfg_result = fn(args)
    return cfg_result


def _sampling_function(model, x, timestep, uncond, cond, cond_scale, model_options={}, seed=None):
    to = {k: v for k, v in model_options.get("transformer_options", {}).items() if k != "sample_sigmas"}
    model_options = {**model_options, "transformer_options": to}
    for modifier in model_options.get("conditioning_modifiers", []):
        model, x, timestep, uncond, cond, cond_scale, model_options, seed = modifier(
            model, x, timestep, uncond, cond, cond_scale, model_options, seed)
    return _sampling_function_inner(model, x, timestep, uncond, cond, cond_scale, model_options, seed)


@contextlib.contextmanager
def forge_sampling():
    """Sample the Forge/reForge way (see the module docstring) inside the block."""
    original = comfy.samplers.sampling_function
    comfy.samplers.sampling_function = _sampling_function
    try:
        yield
    finally:
        comfy.samplers.sampling_function = original


class OldPatcher(comfy.model_patcher.ModelPatcher):
    """ComfyUI's ModelPatcher cut down to what Forge and reForge patchers have: every
    patcher_extension API (wrappers, callbacks, injections) raises."""

    def _absent(self, *args, **kwargs):
        raise AssertionError("the Forge backend used a ComfyUI patcher_extension API that Forge does not have")

    add_wrapper = add_wrapper_with_key = remove_wrappers_with_key = _absent
    add_callback = add_callback_with_key = remove_callbacks_with_key = _absent
    set_injections = remove_injections = _absent


def old_patcher(patcher):
    """An OldPatcher over the same model as a ComfyUI ModelPatcher."""
    return OldPatcher(patcher.model, load_device=patcher.load_device, offload_device=patcher.offload_device)


def schedule(patcher, steps, scheduler="normal"):
    return comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), scheduler, steps).cpu()
