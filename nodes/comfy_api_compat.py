"""The node API, pinned where the host has a pinned version."""
try:
    from comfy_api.v0_0_2 import ComfyExtension, io
except ImportError:  # hosts that only ship `latest`
    from comfy_api.latest import ComfyExtension, io

__all__ = ["ComfyExtension", "io"]
