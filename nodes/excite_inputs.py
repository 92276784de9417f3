"""Moved to guidance/excite_inputs.py (the Forge backend needs it too); kept for existing imports."""
from ..guidance.excite_inputs import parse_step, parse_thresholds, resolve  # noqa: F401
