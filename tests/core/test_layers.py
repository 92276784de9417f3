"""attention.layers: finding a UNet's self-attention layers and the selection syntax."""
import pytest
import torch.nn as nn

from attnguide.attention.layers import (Layer, LayerSelectionError, describe, is_unet, parse_layers,
                                        unet_layers)


class ResBlock(nn.Module):
    """A block child without attention."""


class SpatialTransformer(nn.Module):
    def __init__(self, depth):
        super().__init__()
        self.transformer_blocks = nn.ModuleList(nn.Linear(2, 2) for _ in range(depth))


def _block(depth, container=nn.Sequential):
    children = [ResBlock()] + ([SpatialTransformer(depth)] if depth else [])
    return container(*children) if container is nn.Sequential else container(children)


def fake_unet(input_depths, middle_depth, output_depths, blocks=12):
    """ComfyUI/ldm-style: input_blocks / middle_block / output_blocks, attention where depths say."""
    unet = nn.Module()
    unet.input_blocks = nn.ModuleList(_block(input_depths.get(i, 0)) for i in range(blocks))
    unet.middle_block = nn.Sequential(ResBlock(), SpatialTransformer(middle_depth), ResBlock())
    # output blocks as ModuleLists (TimestepEmbedSequential is a Sequential; both must work)
    unet.output_blocks = nn.ModuleList(_block(output_depths.get(i, 0), nn.ModuleList) for i in range(blocks))
    return unet


def sd15():
    return fake_unet({i: 1 for i in (1, 2, 4, 5, 7, 8)}, 1, {i: 1 for i in range(3, 12)})


def sdxl():
    return fake_unet({4: 2, 5: 2, 7: 10, 8: 10}, 10, {0: 10, 1: 10, 2: 10, 3: 2, 4: 2, 5: 2}, blocks=9)


SD15_DESCRIBED = "d1.0, d2.0, d4.0, d5.0, d7.0, d8.0, m0.0, " + ", ".join(f"u{i}.0" for i in range(3, 12))
SDXL_DESCRIBED = "d4.0-1, d5.0-1, d7.0-9, d8.0-9, m0.0-9, u0.0-9, u1.0-9, u2.0-9, u3.0-1, u4.0-1, u5.0-1"


def L(text):
    kind = {"d": "input", "m": "middle", "u": "output"}[text[0]]
    block, depth = text[1:].split(".")
    return Layer(kind, int(block), int(depth))


def test_layer_str():
    assert str(Layer("input", 4, 1)) == "d4.1"
    assert str(Layer("middle", 0, 9)) == "m0.9"
    assert str(Layer("output", 11, 0)) == "u11.0"


def test_is_unet():
    assert is_unet(sd15())
    not_unet = nn.Module()
    not_unet.input_blocks = nn.ModuleList()
    not_unet.output_blocks = nn.ModuleList()
    assert not is_unet(not_unet)


def test_unet_layers_sd15():
    layers = unet_layers(sd15())
    expected = [L(f"d{i}.0") for i in (1, 2, 4, 5, 7, 8)] + [L("m0.0")] + [L(f"u{i}.0") for i in range(3, 12)]
    assert layers == expected
    assert describe(layers) == SD15_DESCRIBED


def test_unet_layers_sdxl():
    layers = unet_layers(sdxl())
    assert len(layers) == 70
    assert layers[:4] == [L("d4.0"), L("d4.1"), L("d5.0"), L("d5.1")]
    assert layers[4:14] == [Layer("input", 7, d) for d in range(10)]
    assert [l for l in layers if l.kind == "middle"] == [Layer("middle", 0, d) for d in range(10)]
    outputs = [l for l in layers if l.kind == "output"]
    assert outputs == ([Layer("output", b, d) for b in (0, 1, 2) for d in range(10)]
                       + [Layer("output", b, d) for b in (3, 4, 5) for d in range(2)])
    # forward order: input, middle, output
    assert [l.kind for l in layers] == ["input"] * 24 + ["middle"] * 10 + ["output"] * 36
    assert describe(layers) == SDXL_DESCRIBED


def test_describe_empty():
    assert "none" in describe([])


@pytest.fixture(scope="module")
def xl():
    return unet_layers(sdxl())


@pytest.fixture(scope="module")
def sd():
    return unet_layers(sd15())


def test_parse_middle_block_is_every_depth(xl, sd):
    assert parse_layers("m0", xl) == tuple(Layer("middle", 0, d) for d in range(10))
    assert parse_layers("m0", sd) == (L("m0.0"),)
    assert parse_layers("m", sd) == (L("m0.0"),)


def test_parse_single_layer(xl):
    assert parse_layers("u0.4", xl) == (L("u0.4"),)
    assert parse_layers("m0.0", xl) == (L("m0.0"),)


def test_parse_depth_range(xl):
    assert parse_layers("d7.2-9", xl) == tuple(Layer("input", 7, d) for d in range(2, 10))


def test_parse_whole_kind(xl, sd):
    assert parse_layers("d", xl) == tuple(l for l in xl if l.kind == "input")
    assert len(parse_layers("d", xl)) == 24
    assert parse_layers("u", sd) == tuple(L(f"u{i}.0") for i in range(3, 12))


def test_parse_block_and_depth_ranges(xl):
    assert parse_layers("d4-5.0-1", xl) == (L("d4.0"), L("d4.1"), L("d5.0"), L("d5.1"))
    # a block range may span blocks without attention: those are simply not hit
    assert parse_layers("d0-5.1", xl) == (L("d4.1"), L("d5.1"))
    assert parse_layers("u2-3.1", xl) == (L("u2.1"), L("u3.1"))


def test_parse_lists_in_the_order_written_without_duplicates(xl):
    assert parse_layers("u0.4, m0.0 d4.1", xl) == (L("u0.4"), L("m0.0"), L("d4.1"))
    assert parse_layers("  m0.1,,m0.0-2 ,\n u5.1\t", xl) == (L("m0.1"), L("m0.0"), L("m0.2"), L("u5.1"))
    assert parse_layers("M0.3,U3.0", xl) == (L("m0.3"), L("u3.0"))


def _error(text, layers, **kw):
    with pytest.raises(LayerSelectionError) as info:
        parse_layers(text, layers, **kw)
    assert isinstance(info.value, ValueError)
    return str(info.value)


@pytest.mark.parametrize("text", ["u12", "m1", "m0.1", "d3", "d0", "u0-2", "d1.1", "m0.0, u99.0"])
def test_unknown_layer_lists_valid_layers(sd, text):
    message = _error(text, sd)
    assert SD15_DESCRIBED in message


@pytest.mark.parametrize("text", ["x1", "d1.", "d-1", "d1..2", "mid", "d1.0.0", "d1.a", "d4 - 5", "d1;d2",
                                  "d1-2-3", ".0"])
def test_bad_syntax_lists_valid_layers(xl, text):
    message = _error(text, xl)
    assert SDXL_DESCRIBED in message


@pytest.mark.parametrize("text", ["", "   ", ",", " , ,", None])
def test_empty_selection_lists_valid_layers(xl, text):
    message = _error(text, xl, input_name="layer")
    assert message.startswith("layer")
    assert SDXL_DESCRIBED in message


@pytest.mark.parametrize("text", ["d5-4", "d4.1-0", "m0.9-2"])
def test_backwards_range_lists_valid_layers(xl, text):
    message = _error(text, xl)
    assert "backwards" in message
    assert SDXL_DESCRIBED in message


def test_error_names_the_input(xl):
    assert _error("q", xl, input_name="layers").startswith("layers")
    assert _error("u9", xl, input_name="layer").startswith("layer:")
