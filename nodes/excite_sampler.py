"""A SAMPLER that lets Attend-and-Excite move the sampler's own latent, for any base sampler
(SamplerCustom / SamplerCustomAdvanced).

Through the excite window the base sampler runs one step per call, and before each such
step the model's Attend-and-Excite (the MODEL from AttnGuideAttendAndExcite) moves x; the
remaining steps run in one call. Single-step samplers (Euler, Euler ancestral, Heun, DPM2,
DPM++ 2S/SDE, ...) take exactly their own step from the moved latent; multistep samplers
(DPM++ 2M/3M, LMS, iPNDM, DEIS, ...) start their history afresh at each step inside the
window and run normally after it. One noise sampler serves all calls, so ancestral and SDE
samplers draw the noise sequence of an unsplit run.
"""
import inspect

import comfy.k_diffusion.sampling as kd
import comfy.samplers

from . import common
from .attend_excite import RECORD_KEY, SAMPLER_OWNS_X
from .comfy_api_compat import io, node_schema


def _noise_sampler(fn, x, sigmas, seed):
    name = getattr(fn, "__name__", "")
    if "sde" in name:  # these default to a Brownian tree over the whole schedule
        positive = sigmas[sigmas > 0]
        return kd.BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), seed=seed, cpu="gpu" not in name)
    return kd.default_noise_sampler(x, seed=seed)


def excite_sampler_function(base):
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        extra_args = extra_args or {}
        mo = extra_args.get("model_options", {})
        to = mo.get("transformer_options", {})
        exciter = to.get(RECORD_KEY)
        guider = getattr(model, "inner_model", None)
        if exciter is None or guider is None:
            return base(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **options)
        owned = {**extra_args, "model_options": {**mo, "transformer_options": {**to, SAMPLER_OWNS_X: True}}}
        full = to.get("sample_sigmas", sigmas)
        if "noise_sampler" in inspect.signature(base).parameters and options.get("noise_sampler") is None:
            options = {**options, "noise_sampler": _noise_sampler(base, x, sigmas, extra_args.get("seed"))}
        steps = len(sigmas) - 1
        runs = [exciter.runs_at(i, steps) for i in range(steps)]
        i = 0
        while i < steps:
            j = i + 1 if runs[i] else next((k for k in range(i, steps) if runs[k]), steps)
            if runs[i]:
                sigma = sigmas[i].expand(x.shape[0]) if sigmas.ndim == 1 else sigmas[i]
                x = exciter.move(guider, x, sigma, {**owned["model_options"], "transformer_options":
                                                    {**owned["model_options"]["transformer_options"], "sample_sigmas": full}})
            part = None if callback is None else (lambda d, o=i: callback({**d, "i": d["i"] + o}))
            x = base(model, x, sigmas[i:j + 1], extra_args=owned, callback=part, disable=disable, **options)
            i = j
        return x
    return sample


class AttendAndExciteSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuideAttendAndExciteSampler",
            search_aliases=["attend and excite", "attend-and-excite sampler", "sampler wrapper"],
            display_name="Attend-and-Excite Sampler (AttnGuide)",
            category=common.CATEGORY,
            description="Wraps a SAMPLER so Attend-and-Excite moves the sampler's own latent (exact for every "
                        "single-step sampler). Use with SamplerCustom/SamplerCustomAdvanced and the MODEL from "
                        "Attend-and-Excite (AttnGuide); without one it is the base sampler.",
            inputs=[io.Sampler.Input("sampler", tooltip="The base sampler, e.g. from KSamplerSelect.")],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, sampler) -> io.NodeOutput:
        if not isinstance(sampler, comfy.samplers.KSAMPLER):
            raise ValueError(f"sampler: {type(sampler).__name__} cannot be run step by step; connect a sampler from "
                             "KSamplerSelect or a Sampler... node (a k-diffusion sampler).")
        return io.NodeOutput(comfy.samplers.KSAMPLER(excite_sampler_function(sampler.sampler_function),
                                                     sampler.extra_options, sampler.inpaint_options))
