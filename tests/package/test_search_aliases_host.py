"""The nodes' search aliases reach a real ComfyUI's node info where its Schema has the field
(ComfyUI 0.10.0 on), and the nodes still build on hosts whose Schema lacks it (0.3.x)."""
import dataclasses
import importlib


def _version(text):
    return tuple(int(part) for part in text.split(".")[:3])


def test_search_aliases_reach_the_node_info(comfy):
    from attnguide.nodes import NODES
    from attnguide.nodes.comfy_api_compat import HAS_SEARCH_ALIASES, io
    host = _version(importlib.import_module("comfyui_version").__version__)
    fields = {f.name for f in dataclasses.fields(io.Schema)}
    assert HAS_SEARCH_ALIASES == ("search_aliases" in fields) == (host >= (0, 10, 0)), host
    for cls in NODES:
        schema = cls.define_schema()
        info = cls.GET_NODE_INFO_V1()
        assert info["name"] == schema.node_id
        if HAS_SEARCH_ALIASES:
            assert schema.search_aliases and info["search_aliases"] == schema.search_aliases, schema.node_id
        else:
            assert "search_aliases" not in info, schema.node_id
