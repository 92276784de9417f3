"""An IMAGE of where a word of the source prompt is attended, in the reference and in the
edit (Pix2Pix-Zero): cross-attention averaged over heads, layers and steps."""
import torch

from ..comfyui.prompt_tokens import word_indices
from .comfy_api_compat import io, node_schema
from .sockets import Maps
from .widgets import CATEGORY


def map_images(preview, indices, scale):
    """(images * words, h * scale, 2 * w * scale, 3): reference left, edit right, each pair
    scaled by its common maximum so the two are comparable."""
    reference, edit = (None, None) if preview is None else (preview.mean("reference"), preview.mean("edit"))
    if reference is None or edit is None:
        raise ValueError("maps: no cross-attention was recorded; run Pix2Pix-Zero Edit (AttnGuide) first.")
    if max(indices) >= reference.shape[-1]:
        raise ValueError(f"word: token position {max(indices)} is past the prompt's {reference.shape[-1]} positions.")
    out = []
    for b in range(reference.shape[0]):
        for i in indices:
            pair = torch.cat([reference[b, :, :, i], edit[b, :, :, i]], dim=-1)
            out.append(pair / pair.max().clamp(min=1e-12))
    images = torch.stack(out).repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    return images[..., None].expand(-1, -1, -1, 3).contiguous()


class Pix2PixZeroMaps(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return node_schema(
            node_id="AttnGuidePix2PixZeroMaps",
            search_aliases=["pix2pix zero", "pix2pix-zero", "attention maps", "cross-attention maps"],
            display_name="Pix2Pix-Zero Maps (AttnGuide)",
            category=CATEGORY,
            description="Where a word of the source prompt is attended: reference (left) vs edit (right), averaged over "
                        "heads, layers and steps. Cross-attention guidance keeps the right like the left.",
            inputs=[
                Maps.Input("maps", tooltip="The maps output of Pix2Pix-Zero Edit (AttnGuide)."),
                io.Clip.Input("clip", tooltip="The CLIP that encoded the source prompt: finds the word's token."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="The source prompt, exactly as typed into its CLIP Text Encode."),
                io.String.Input("word", default="",
                                tooltip="The word(s) to show, comma separated, e.g. 'cat'; one image per image and word."),
                io.Int.Input("scale", default=8, min=1, max=64,
                             tooltip="Each latent cell becomes scale x scale pixels (8 = the image's size)."),
            ],
            outputs=[io.Image.Output(tooltip="Per image and word: reference left, edit right; bright = attended.")],
        )

    @classmethod
    def execute(cls, maps, clip, prompt, word, scale) -> io.NodeOutput:
        return io.NodeOutput(map_images(maps, word_indices(clip, prompt, word), scale))
