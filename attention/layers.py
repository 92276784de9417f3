"""Layer addresses of a model's self-attention and a small selection syntax.

A layer is (kind, block, depth). In a UNet, kind is "input", "middle" or "output", block the
index of the host's input/middle/output block, depth the transformer block inside it; the
syntax names them d<block>.<depth>, m<block>.<depth>, u<block>.<depth>. In a diffusion
transformer (DiT), kind is "joint" (a block where text and image tokens attend jointly in
two streams: SD3's joint blocks, Flux's double blocks, Qwen-Image's blocks) or "single"
(Flux's single-stream blocks), depth is 0, and the syntax is j<block>, s<block>.
Blocks and depths may be ranges ("d4-5.0-1", "j0-3") or left out to mean all ("m0" =
every depth of the middle block, "u" = every output layer, "s" = every single block).
Items are separated by commas. "auto" stands for the method's default for the model.
"""
import re
from typing import NamedTuple

KIND_LETTERS = {"input": "d", "middle": "m", "output": "u", "joint": "j", "single": "s"}
LETTER_KINDS = {v: k for k, v in KIND_LETTERS.items()}
DIT_KINDS = ("joint", "single")
AUTO = "auto"
_ITEM = re.compile(r"^([dmujs])(\d+(?:-\d+)?)?(?:\.(\d+(?:-\d+)?))?$")


class Layer(NamedTuple):
    kind: str
    block: int
    depth: int

    def __str__(self):
        if self.kind in DIT_KINDS:
            return f"{KIND_LETTERS[self.kind]}{self.block}"
        return f"{KIND_LETTERS[self.kind]}{self.block}.{self.depth}"


def forward_order(layer):
    """Sort key: the order in which a forward reaches its layers (UNet or DiT)."""
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
    """Compact listing such as 'd1.0, d4.0-1, m0.0-9' or 'j0-18, s0-37'."""
    groups, runs = {}, {}
    for layer in layers:
        if layer.kind in DIT_KINDS:
            runs.setdefault(layer.kind, []).append(layer.block)
            continue
        groups.setdefault((layer.kind, layer.block), []).append(layer.depth)
    parts = []
    for (kind, block), depths in groups.items():
        lo, hi = min(depths), max(depths)
        parts.append(f"{KIND_LETTERS[kind]}{block}.{lo}" + (f"-{hi}" if hi > lo else ""))
    for kind, blocks in runs.items():
        parts.extend(f"{KIND_LETTERS[kind]}{lo}" + (f"-{hi}" if hi > lo else "") for lo, hi in _runs(sorted(blocks)))
    return ", ".join(parts) if parts else "(none: this model has no attention layers)"


def _runs(numbers):
    """Consecutive runs of sorted integers as (first, last) pairs."""
    out = []
    for n in numbers:
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def _span(text):
    if text is None:
        return None
    lo, _, hi = text.partition("-")
    lo, hi = int(lo), int(hi or lo)
    if hi < lo:
        raise LayerSelectionError(f"range '{text}' runs backwards")
    return lo, hi


def parse_layers(text, layers, input_name="layers", auto=None):
    """Resolve a selection against the model's layers; errors list the valid ones. `auto` is
    the selection "auto" stands for (the method's default for this model)."""
    chosen = []
    if (text or "").strip().lower() == AUTO:
        if auto is None:
            raise LayerSelectionError(f"{input_name}: 'auto' has no default here; name the layers. "
                                      f"Valid layers for this model: {describe(layers)}")
        text = auto
    items = [i for i in re.split(r"[,\s]+", (text or "").strip().lower()) if i]
    if not items:
        raise LayerSelectionError(f"{input_name} is empty. Valid layers for this model: {describe(layers)}")
    for item in items:
        match = _ITEM.match(item)
        if not match:
            raise LayerSelectionError(
                f"{input_name}: cannot read '{item}'. Write d/m/u + block[.depth] (UNets) or j/s + block "
                f"(DiTs), ranges with '-', e.g. 'm0', 'u0.0', 'd4-5.0-1', 'j1', 's0-3'. "
                f"Valid layers for this model: {describe(layers)}")
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
