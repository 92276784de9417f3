"""Where a ComfyUI/ldm-style UNet has cross-attention, by downscale factor.

A level's downscale is how many times the latent was halved before it (1 = latent
resolution). Layers use the addresses of attention.layers (kind, block, depth).
"""
from .layers import Layer


def _has(module, class_name):
    return any(type(m).__name__ == class_name for m in module)


def cross_attention_levels(diffusion_model):
    """{downscale: [Layer, ...]} for every transformer block that has cross-attention (attn2)."""
    levels = {}

    def add(kind, index, block, scale):
        for module in block:
            for depth, tb in enumerate(getattr(module, "transformer_blocks", ())):
                if getattr(tb, "attn2", None) is not None:
                    levels.setdefault(scale, []).append(Layer(kind, index, depth))

    scale = 1
    for index, block in enumerate(diffusion_model.input_blocks):
        if _has(block, "Downsample"):
            scale *= 2
        add("input", index, block, scale)
    add("middle", 0, diffusion_model.middle_block, scale)
    for index, block in enumerate(diffusion_model.output_blocks):
        add("output", index, block, scale)
        if _has(block, "Upsample"):
            scale //= 2
    return levels


def grid(height, width, downscale):
    """Query grid (h, w) of a level: every halving rounds up, as the UNet's stride-2 convs do."""
    h, w = height, width
    s = 1
    while s < downscale:
        h, w, s = (h + 1) // 2, (w + 1) // 2, s * 2
    return h, w
