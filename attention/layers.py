"""Layer addresses of a UNet's self-attention and a small selection syntax.

A layer is (kind, block, depth): kind is "input", "middle" or "output", block the
index of the host's input/middle/output block, depth the transformer block inside it.
The syntax names them d<block>.<depth>, m<block>.<depth>, u<block>.<depth>; block and
depth may be ranges ("d4-5.0-1") or left out to mean all ("m0" = every depth of the
middle block, "u" = every output layer). Items are separated by commas.
"""
import re
from typing import NamedTuple

KIND_LETTERS = {"input": "d", "middle": "m", "output": "u"}
LETTER_KINDS = {v: k for k, v in KIND_LETTERS.items()}
_ITEM = re.compile(r"^([dmu])(\d+(?:-\d+)?)?(?:\.(\d+(?:-\d+)?))?$")


class Layer(NamedTuple):
    kind: str
    block: int
    depth: int

    def __str__(self):
        return f"{KIND_LETTERS[self.kind]}{self.block}.{self.depth}"


def forward_order(layer):
    """Sort key: the order in which a UNet forward reaches its layers."""
    return tuple(KIND_LETTERS).index(layer.kind), layer.block, layer.depth


class LayerSelectionError(ValueError):
    pass


def is_unet(diffusion_model):
    return all(hasattr(diffusion_model, a) for a in ("input_blocks", "middle_block", "output_blocks"))


def unet_layers(diffusion_model):
    """Every self-attention layer of a ComfyUI/ldm-style UNet, in forward order."""
    parts = (("input", list(diffusion_model.input_blocks)),
             ("middle", [diffusion_model.middle_block]),
             ("output", list(diffusion_model.output_blocks)))
    layers = []
    for kind, blocks in parts:
        for index, block in enumerate(blocks):
            for module in block:
                for depth in range(len(getattr(module, "transformer_blocks", ()))):
                    layers.append(Layer(kind, index, depth))
    return layers


def describe(layers):
    """Compact listing such as 'd1.0, d4.0-1, m0.0-9'."""
    groups = {}
    for layer in layers:
        groups.setdefault((layer.kind, layer.block), []).append(layer.depth)
    parts = []
    for (kind, block), depths in groups.items():
        lo, hi = min(depths), max(depths)
        parts.append(f"{KIND_LETTERS[kind]}{block}.{lo}" + (f"-{hi}" if hi > lo else ""))
    return ", ".join(parts) if parts else "(none: this model has no attention layers)"


def _span(text):
    if text is None:
        return None
    lo, _, hi = text.partition("-")
    lo, hi = int(lo), int(hi or lo)
    if hi < lo:
        raise LayerSelectionError(f"range '{text}' runs backwards")
    return lo, hi


def parse_layers(text, layers, input_name="layers"):
    """Resolve a selection against the model's layers; errors list the valid ones."""
    chosen = []
    items = [i for i in re.split(r"[,\s]+", (text or "").strip().lower()) if i]
    if not items:
        raise LayerSelectionError(f"{input_name} is empty. Valid layers for this model: {describe(layers)}")
    for item in items:
        match = _ITEM.match(item)
        if not match:
            raise LayerSelectionError(
                f"{input_name}: cannot read '{item}'. Write d/m/u + block[.depth], ranges with '-', "
                f"e.g. 'm0', 'u0.0', 'd4-5.0-1'. Valid layers for this model: {describe(layers)}")
        kind = LETTER_KINDS[match.group(1)]
        try:
            blocks, depths = _span(match.group(2)), _span(match.group(3))
        except LayerSelectionError as e:
            raise LayerSelectionError(f"{input_name}: '{item}': {e}. Valid layers for this model: {describe(layers)}") from None
        hits = [l for l in layers if l.kind == kind
                and (blocks is None or blocks[0] <= l.block <= blocks[1])
                and (depths is None or depths[0] <= l.depth <= depths[1])]
        if not hits:
            raise LayerSelectionError(
                f"{input_name}: '{item}' names no attention layer of this model. "
                f"Valid layers: {describe(layers)}")
        chosen.extend(h for h in hits if h not in chosen)
    return tuple(chosen)
