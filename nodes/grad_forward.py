"""Moved to attention/grad_forward.py (the Forge backend needs it too); kept for existing imports."""
from ..attention.grad_forward import gradients_through  # noqa: F401
