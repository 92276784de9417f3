"""Attend-and-Excite Sampler (AttnGuideAttendAndExciteSampler): a SAMPLER for SamplerCustomAdvanced;
comfyui/excite_sampler.py wraps the sampler function."""
import comfy.samplers

from ..comfyui.excite_sampler import excite_sampler_function
from .comfy_api_compat import io, node_schema
from .widgets import CATEGORY


class AttendAndExciteSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuideAttendAndExciteSampler",
            search_aliases=["attend and excite", "attend-and-excite sampler", "sampler wrapper"],
            display_name="Attend-and-Excite Sampler (AttnGuide)",
            category=CATEGORY,
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
