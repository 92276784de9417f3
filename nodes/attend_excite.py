"""Attend-and-Excite nodes (AttnGuideAttendAndExcite, AttnGuideAttendAndExciteMaps); the sampling-time
work is comfyui/attend_excite.py."""
from ..comfyui.attend_excite import NAME, excite_model, maps_image
from ..methods.attend_excite import SPEC
from .comfy_api_compat import io, node_schema
from .widgets import CATEGORY, widgets


class AttendAndExcite(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuideAttendAndExcite",
            search_aliases=["attend and excite", "attend-and-excite", "missing objects", "token attention"],
            display_name=NAME,
            category=CATEGORY,
            description="Attend-and-Excite (Chefer et al. 2023), equal to diffusers' StableDiffusionAttendAndExcitePipeline "
                        "with Euler/DDIM: moves the latent during the first steps until every named subject gets "
                        "cross-attention, so none goes missing.",
            inputs=[
                io.Model.Input("model", tooltip="A UNet model (SD1.x, SD2.x, SDXL)."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="The positive prompt, exactly as typed into the CLIP Text Encode that feeds the "
                                        "sampler's positive input: the words are looked up in it."),
                *widgets(SPEC, "words"),
                io.Clip.Input("clip", optional=True,
                              tooltip="The CLIP that encodes the prompt; its tokenizer finds the words' token positions. "
                                      "Not needed when token_indices is set."),
                *widgets(SPEC, *[p.name for p in SPEC.params[1:]]),
            ],
            outputs=[io.Model.Output(),
                     io.Conditioning.Output(display_name="positive",
                                            tooltip="The prompt encoded with the CLIP input: connect it to the "
                                                    "sampler's positive, so the words are found in exactly the text "
                                                    "it encodes. Needs the CLIP input.")],
        )

    @classmethod
    def execute(cls, model, prompt, clip=None, **params) -> io.NodeOutput:
        positive = clip.encode_from_tokens_scheduled(clip.tokenize(prompt)) if clip is not None else None
        return io.NodeOutput(excite_model(model, prompt, clip, params), positive)

class AttendAndExciteMaps(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuideAttendAndExciteMaps",
            search_aliases=["attend and excite", "attention maps", "cross-attention maps"],
            display_name="Attend-and-Excite Maps (AttnGuide)",
            category=CATEGORY,
            description="The smoothed cross-attention map of every excited token at the last step Attend-and-Excite "
                        "ran, one image per image and token (bright = attended; a subject whose map stays dark is the "
                        "one that goes missing).",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL output of Attend-and-Excite (AttnGuide) that the sampler used."),
                io.Latent.Input("samples", tooltip="The sampler's output: makes this node run after the sampler."),
                io.Int.Input("scale", default=8, min=1, max=64,
                             tooltip="Each map cell becomes scale x scale pixels (nearest neighbour)."),
            ],
            outputs=[io.Image.Output(tooltip="Images in order image 0 token 0, image 0 token 1, ..., values 0..1.")],
        )

    @classmethod
    def execute(cls, model, samples, scale) -> io.NodeOutput:
        return io.NodeOutput(maps_image(model, scale))
