"""Pix2Pix-Zero direction nodes (Direction, Save Direction, Load Direction); the encoding and files are
comfyui/pix2pix_zero.py."""
import os

import folder_paths

from ..comfyui.pix2pix_zero import (
    FOLDER,
    folders,
    load_direction,
    make_direction,
    safe_name,
    save_direction,
)
from ..methods.pix2pix_zero import SPEC
from .comfy_api_compat import io, node_schema
from .sockets import Direction
from .widgets import CATEGORY, widgets


class Pix2PixZeroDirection(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuidePix2PixZeroDirection",
            search_aliases=["pix2pix zero", "pix2pix-zero", "edit direction", "image editing"],
            display_name="Pix2Pix-Zero Direction (AttnGuide)",
            category=CATEGORY,
            description="The edit direction of Pix2Pix-Zero (Parmar et al. 2023): mean CLIP embedding of the target "
                        "sentences minus that of the source sentences, as in diffusers' StableDiffusionPix2PixZeroPipeline.",
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP of the model you edit with (the one that encodes its prompt)."),
                *widgets(SPEC, "source", "target"),
                io.Clip.Input("target_clip", optional=True,
                              tooltip="Advanced: encode the target with this CLIP instead (e.g. the same checkpoint "
                                      "with a LoRA). It must be the same text encoder as clip."),
            ],
            outputs=[Direction.Output(display_name="direction")],
        )

    @classmethod
    def execute(cls, clip, source, target, target_clip=None) -> io.NodeOutput:
        return io.NodeOutput(make_direction(clip, source, target, target_clip))

class Pix2PixZeroSaveDirection(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuidePix2PixZeroSaveDirection",
            search_aliases=["pix2pix zero", "pix2pix-zero", "save edit direction"],
            display_name="Pix2Pix-Zero Save Direction (AttnGuide)",
            category=CATEGORY,
            description="Saves an edit direction to output/attnguide_directions/<filename>.safetensors; the Load node "
                        "lists it (and files put in models/attnguide_directions).",
            inputs=[Direction.Input("direction", tooltip="From Pix2Pix-Zero Direction (AttnGuide)."),
                    io.String.Input("filename", default="cat_to_dog",
                                    tooltip="File name without extension; an existing file of that name is replaced.")],
            outputs=[Direction.Output(display_name="direction")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, direction, filename) -> io.NodeOutput:
        folder = folders()[1]
        os.makedirs(folder, exist_ok=True)
        save_direction(direction, os.path.join(folder, safe_name(filename) + ".safetensors"))
        return io.NodeOutput(direction)

class Pix2PixZeroLoadDirection(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        folders()
        return node_schema(
            node_id="AttnGuidePix2PixZeroLoadDirection",
            search_aliases=["pix2pix zero", "pix2pix-zero", "load edit direction"],
            display_name="Pix2Pix-Zero Load Direction (AttnGuide)",
            category=CATEGORY,
            description="Loads an edit direction saved by Pix2Pix-Zero Save Direction (AttnGuide).",
            inputs=[io.Combo.Input("direction_file", options=folder_paths.get_filename_list(FOLDER),
                                   tooltip="A .safetensors file in models/attnguide_directions or "
                                           "output/attnguide_directions.")],
            outputs=[Direction.Output(display_name="direction")],
        )

    @classmethod
    def execute(cls, direction_file) -> io.NodeOutput:
        folders()
        path = folder_paths.get_full_path(FOLDER, direction_file)
        if path is None:
            raise ValueError(f"direction_file: '{direction_file}' is not in models/{FOLDER} or output/{FOLDER}.")
        return io.NodeOutput(load_direction(path))
