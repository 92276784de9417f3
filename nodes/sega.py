"""Semantic Guidance nodes (SEGA Concept, SEGA, SEGA Guider); comfyui/sega.py installs the concepts' rows."""
import comfy.samplers

from ..comfyui.sega import ConceptInput, apply_sega
from ..methods.sega import SPEC
from ..methods.sega import concept as sega_concept
from .comfy_api_compat import io, node_schema
from .sockets import Concepts
from .widgets import CATEGORY, widgets


class SEGAConcept(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuideSEGAConcept",
            search_aliases=["SEGA", "semantic guidance", "concept", "edit concept"],
            display_name="SEGA Concept (AttnGuide)",
            category=CATEGORY,
            description="One concept for Semantic Guidance: a prompt to add to or remove from the image. "
                        "Chain several through 'concepts'.",
            inputs=[
                *widgets(SPEC, *[p.name for p in SPEC.concept_params]),
                io.Clip.Input("clip", optional=True, tooltip="The checkpoint's CLIP, to encode 'prompt'."),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="The concept already encoded (instead of clip + prompt), from the same "
                                              "text encoder as the prompt."),
                Concepts.Input("concepts", optional=True, tooltip="Concepts to chain this one after."),
            ],
            outputs=[Concepts.Output(display_name="concepts")],
        )

    @classmethod
    def execute(cls, clip=None, conditioning=None, concepts=None, **params) -> io.NodeOutput:
        previous = list(concepts or [])
        index, prompt = len(previous), params["prompt"]
        concept = sega_concept(index, **params)
        if conditioning is None:
            if clip is None:
                raise ValueError(f"SEGA concept {concept.label!r}: connect a CLIP (to encode 'prompt') or a "
                                 "'conditioning'.")
            if not prompt.strip():
                raise ValueError(f"SEGA concept {index + 1}: 'prompt' is empty. Type the concept to add or "
                                 "remove (e.g. 'sunglasses'), or connect a 'conditioning'.")
            conditioning = clip.encode_from_tokens_scheduled(clip.tokenize(prompt))
        if not conditioning:
            raise ValueError(f"SEGA concept {concept.label!r}: the 'conditioning' input is empty.")
        return io.NodeOutput(previous + [ConceptInput(conditioning, concept)])

def _momentum_inputs():
    return widgets(SPEC)

class SemanticGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuideSEGA",
            search_aliases=["SEGA", "semantic guidance", "concept editing", "add or remove concept"],
            display_name="Semantic Guidance (AttnGuide)",
            category=CATEGORY,
            description="Semantic Guidance (Brack et al. 2023), equal to diffusers' SemanticStableDiffusionPipeline: "
                        "adds or removes the chained concepts. Use with KSampler (or any guider built on the model).",
            inputs=[io.Model.Input("model", tooltip="Any model ComfyUI samples with CFG."),
                    Concepts.Input("concepts", tooltip="From 'SEGA Concept (AttnGuide)' nodes."),
                    *_momentum_inputs()],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, concepts, **params) -> io.NodeOutput:
        return io.NodeOutput(apply_sega(model, concepts, params))

class SEGAGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuideSEGAGuider",
            search_aliases=["SEGA", "semantic guidance", "guider", "SamplerCustomAdvanced"],
            display_name="SEGA Guider (AttnGuide)",
            category=CATEGORY,
            description="A CFG guider with Semantic Guidance, for SamplerCustomAdvanced.",
            inputs=[io.Model.Input("model", tooltip="Any model ComfyUI samples with CFG."),
                    io.Conditioning.Input("positive", tooltip="The prompt."),
                    io.Conditioning.Input("negative", tooltip="The negative prompt; SEGA's edits are measured "
                                                              "from it, as the reference measures them from ''."),
                    Concepts.Input("concepts", tooltip="From 'SEGA Concept (AttnGuide)' nodes."),
                    io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01,
                                   tooltip="Classifier-free guidance scale (the reference's guidance_scale)."),
                    *_momentum_inputs()],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def execute(cls, model, positive, negative, concepts, cfg, **params) -> io.NodeOutput:
        guider = comfy.samplers.CFGGuider(apply_sega(model, concepts, params))
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        return io.NodeOutput(guider)
