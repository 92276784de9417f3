"""The node API, pinned where the host has a pinned version."""
try:
    from comfy_api.v0_0_2 import ComfyExtension, io
except ImportError:  # hosts that only ship `latest`
    from comfy_api.latest import ComfyExtension, io

# io.Schema has search_aliases from ComfyUI 0.10.0 on; 0.3.x's Schema refuses a field it lacks.
HAS_SEARCH_ALIASES = "search_aliases" in getattr(io.Schema, "__dataclass_fields__", {})


def node_schema(search_aliases, **fields):
    """io.Schema(**fields), with the node's search aliases where the host can show them."""
    if HAS_SEARCH_ALIASES:
        fields["search_aliases"] = list(search_aliases)
    return io.Schema(**fields)


__all__ = ["ComfyExtension", "io", "node_schema"]
