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

FOLDER = "attnguide_directions"

@dataclass(frozen=True)
class EditDirection:
    tensor: torch.Tensor   # (1, 77, width), float32 on the CPU
    encoder: str           # which text encoder made it
    source: str = ""
    target: str = ""

def folders():
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

def safe_name(text):
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
