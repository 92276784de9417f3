"""The pack's own socket types between its nodes."""
from .comfy_api_compat import io

Concepts = io.Custom("ATTNGUIDE_SEGA_CONCEPTS")
Direction = io.Custom("ATTNGUIDE_P2PZ_DIRECTION")
Maps = io.Custom("ATTNGUIDE_P2PZ_MAPS")
