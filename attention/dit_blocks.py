"""The diffusion transformers (DiTs) whose attention the pack addresses, found by the host's
class name: their stacks of blocks in forward order and how a joint block is called.

Every family here concatenates the text tokens before the image tokens in its joint
attention (ComfyUI: flux/layers.py, mmdit.py _block_mixing, qwen_image/model.py), and a
single-stream block gets that same [text, image] sequence. Video DiTs and other families are
not listed: the nodes name them in their refusal.
"""
from dataclasses import dataclass
from typing import NamedTuple

from .layers import Layer


@dataclass(frozen=True)
class DitFamily:
    key: str         # "sd3", "flux", "qwen_image": what methods key their defaults on
    stacks: tuple    # ((layer kind, attribute of the diffusion model), ...) in forward order
    text_arg: tuple  # (position, keyword) of the text stream in a joint block's call
    patch: int = 2   # latent pixels per token side


SD3 = DitFamily("sd3", (("joint", "joint_blocks"),), (0, "context"))
FLUX = DitFamily("flux", (("joint", "double_blocks"), ("single", "single_blocks")), (1, "txt"))
QWEN_IMAGE = DitFamily("qwen_image", (("joint", "transformer_blocks"),), (1, "encoder_hidden_states"))
FAMILIES = {
    "OpenAISignatureMMDITWrapper": SD3,
    "Flux": FLUX,
    "Chroma": FLUX,
    "QwenImageTransformer2DModel": QWEN_IMAGE,
}


def dit_family(diffusion_model):
    """The DitFamily of a host's diffusion model, or None."""
    family = FAMILIES.get(type(diffusion_model).__name__)
    if family is None or not all(hasattr(diffusion_model, attr) for _, attr in family.stacks):
        return None
    return family


def dit_blocks(diffusion_model, family):
    """(Layer, block module) of every attention block, in forward order."""
    return [(Layer(kind, i, 0), block) for kind, attr in family.stacks
            for i, block in enumerate(getattr(diffusion_model, attr))]


def dit_layers(diffusion_model, family):
    return [layer for layer, _ in dit_blocks(diffusion_model, family)]


def text_tokens(family, args, kwargs):
    """The number of text tokens of a joint block's call, from its text-stream argument."""
    position, keyword = family.text_arg
    txt = kwargs.get(keyword, args[position] if len(args) > position else None)
    return None if txt is None else txt.shape[1]


BLOCK_KEY = "attnguide_block"  # the router's hook options: the BlockCall of the joint attention being routed


class BlockCall(NamedTuple):
    """What a hook on a DiT block's attention needs beyond q, k, v: the sequence is
    [text_tokens text tokens, grid[0] * grid[1] image tokens, anything appended (reference latents)]."""
    layer: Layer
    text_tokens: int
    grid: tuple
