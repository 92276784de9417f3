"""Pix2Pix-Zero edit directions: made from sentences with the host's CLIP, saved and loaded
as .safetensors so a shared workflow can carry one."""
import json
import os
import re
from dataclasses import dataclass

import folder_paths
import safetensors.torch
import torch

from ..guidance.pix2pix_zero import edit_direction, sentences
from . import common
from .comfy_api_compat import io, node_schema

Direction = io.Custom("ATTNGUIDE_P2PZ_DIRECTION")
FOLDER = "attnguide_directions"


@dataclass(frozen=True)
class EditDirection:
    tensor: torch.Tensor   # (1, 77, width), float32 on the CPU
    encoder: str           # which text encoder made it
    source: str = ""
    target: str = ""


def _folders():
    """Directions are loaded from models/attnguide_directions and saved to output/attnguide_directions."""
    paths = [os.path.join(folder_paths.models_dir, FOLDER), os.path.join(folder_paths.get_output_directory(), FOLDER)]
    known = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))[0]
    for p in paths:
        if p not in known:
            folder_paths.add_model_folder_path(FOLDER, p)
    folder_paths.folder_names_and_paths[FOLDER][1].add(".safetensors")
    return paths


def encoder_name(clip):
    return type(clip.cond_stage_model).__name__


def encode_sentences(clip, lines, name):
    """(sentences, 77, width): each sentence encoded on its own, as the prompt is."""
    out = []
    for line in lines:
        cond = clip.encode_from_tokens(clip.tokenize(line))
        if cond.shape[1] != 77:
            raise ValueError(f"{name}: the sentence '{line[:60]}' is longer than one 75-token window; "
                             "shorten it (the direction is added to a prompt of one window).")
        out.append(cond[:1].float().cpu())
    return torch.cat(out)


def make_direction(clip, source, target, target_clip=None):
    target_clip = clip if target_clip is None else target_clip
    if encoder_name(clip) != encoder_name(target_clip):
        raise ValueError(f"target_clip is a different text encoder ({encoder_name(target_clip)}) from clip "
                         f"({encoder_name(clip)}): source and target must be encoded by the same one. Disconnect "
                         "target_clip or connect the same model's CLIP.")
    src = encode_sentences(clip, sentences(source, "source"), "source")
    tgt = encode_sentences(target_clip, sentences(target, "target"), "target")
    return EditDirection(edit_direction(src, tgt), encoder_name(clip), source, target)


class Pix2PixZeroDirection(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuidePix2PixZeroDirection",
            search_aliases=["pix2pix zero", "pix2pix-zero", "edit direction", "image editing"],
            display_name="Pix2Pix-Zero Direction (AttnGuide)",
            category=common.CATEGORY,
            description="The edit direction of Pix2Pix-Zero (Parmar et al. 2023): mean CLIP embedding of the target "
                        "sentences minus that of the source sentences, as in diffusers' StableDiffusionPix2PixZeroPipeline.",
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP of the model you edit with (the one that encodes its prompt)."),
                io.String.Input("source", multiline=True, default="cat",
                                tooltip="What the image shows now: sentences about it, one per line (e.g. 'a cat "
                                        "sitting on a sofa.'), or one word ('cat'), expanded with 16 built-in "
                                        "sentence templates. A single line that ends with '.', '!' or '?' is one sentence."),
                io.String.Input("target", multiline=True, default="dog",
                                tooltip="What it should show: the same kind of sentences with the new concept ('dog')."),
                io.Clip.Input("target_clip", optional=True,
                              tooltip="Advanced: encode the target with this CLIP instead (e.g. the same checkpoint "
                                      "with a LoRA). It must be the same text encoder as clip."),
            ],
            outputs=[Direction.Output(display_name="direction")],
        )

    @classmethod
    def execute(cls, clip, source, target, target_clip=None) -> io.NodeOutput:
        return io.NodeOutput(make_direction(clip, source, target, target_clip))


def _safe_name(text):
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text).strip()).strip("._")
    if not name:
        raise ValueError("filename is empty: give a name such as 'cat_to_dog'.")
    return name[:-12] if name.endswith(".safetensors") else name


def save_direction(direction, path):
    metadata = {"attnguide": "pix2pix_zero_direction", "encoder": direction.encoder,
                "sentences": json.dumps({"source": direction.source, "target": direction.target})}
    safetensors.torch.save_file({"direction": direction.tensor.contiguous()}, path, metadata=metadata)


def load_direction(path):
    with safetensors.safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
        if "direction" not in f.keys():
            raise ValueError(f"{os.path.basename(path)} holds no 'direction' tensor: it is not a Pix2Pix-Zero "
                             "direction saved by AttnGuide.")
        tensor = f.get_tensor("direction").float()
    if tensor.ndim != 3 or tensor.shape[0] != 1:
        raise ValueError(f"{os.path.basename(path)}: the direction is shaped {tuple(tensor.shape)}, expected (1, tokens, width).")
    texts = json.loads(metadata.get("sentences", "{}") or "{}")
    return EditDirection(tensor, metadata.get("encoder", "unknown"), texts.get("source", ""), texts.get("target", ""))


class Pix2PixZeroSaveDirection(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuidePix2PixZeroSaveDirection",
            search_aliases=["pix2pix zero", "pix2pix-zero", "save edit direction"],
            display_name="Pix2Pix-Zero Save Direction (AttnGuide)",
            category=common.CATEGORY,
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
        folder = _folders()[1]
        os.makedirs(folder, exist_ok=True)
        save_direction(direction, os.path.join(folder, _safe_name(filename) + ".safetensors"))
        return io.NodeOutput(direction)


class Pix2PixZeroLoadDirection(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        _folders()
        return node_schema(
            node_id="AttnGuidePix2PixZeroLoadDirection",
            search_aliases=["pix2pix zero", "pix2pix-zero", "load edit direction"],
            display_name="Pix2Pix-Zero Load Direction (AttnGuide)",
            category=common.CATEGORY,
            description="Loads an edit direction saved by Pix2Pix-Zero Save Direction (AttnGuide).",
            inputs=[io.Combo.Input("direction_file", options=folder_paths.get_filename_list(FOLDER),
                                   tooltip="A .safetensors file in models/attnguide_directions or "
                                           "output/attnguide_directions.")],
            outputs=[Direction.Output(display_name="direction")],
        )

    @classmethod
    def execute(cls, direction_file) -> io.NodeOutput:
        _folders()
        path = folder_paths.get_full_path(FOLDER, direction_file)
        if path is None:
            raise ValueError(f"direction_file: '{direction_file}' is not in models/{FOLDER} or output/{FOLDER}.")
        return io.NodeOutput(load_direction(path))
