"""X/Y/Z plot axes for every numeric parameter. An axis value lands in the cell's p and
turns its method on; the cell's p is a shallow copy (scripts/xyz_grid.py), so the
overrides dict is replaced, never changed in place."""
from ...methods import METHODS

OVERRIDES_ATTR = "attnguide_xyz"


def axis_label(spec, slot, param):
    where = f" {slot + 1}" if slot is not None else ""
    return f"[AttnGuide] {spec.short}{where} {param.label}"


def overrides(p, method):
    """{(slot, name): value} set by X/Y/Z axes on p for `method`."""
    return getattr(p, OVERRIDES_ATTR, {}).get(method, {})


def set_override(p, method, slot, name, value):
    current = getattr(p, OVERRIDES_ATTR, {})
    setattr(p, OVERRIDES_ATTR, {**current, method: {**current.get(method, {}), (slot, name): value}})


def register_axes(method):
    """Add `method`'s axes to the X/Y/Z plot script, once. Now, while our script file loads:
    the X/Y/Z script (webui/scripts/xyz_grid.py) is loaded before any extension's
    (modules/scripts.py list_scripts), and API-only A1111 (--nowebui) builds the scripts'
    controls, which fix the axis list, before the on_before_ui callbacks run (webui.py
    api_only: Api() then before_ui_callback). Only when the X/Y/Z script is not loaded yet
    is it left to on_before_ui (the gradio UI runs those before it builds the controls)."""
    if add_axes(method) is None:
        from modules import script_callbacks
        script_callbacks.on_before_ui(lambda: add_axes(method), name=f"attnguide {method} axes")


def _xyz_module():
    from modules import scripts
    for data in scripts.scripts_data:
        if data.script_class.__module__ == "xyz_grid.py" and hasattr(data.module, "AxisOption"):
            return data.module
    return None


def add_axes(method):
    """The axes added now (none if they are there already); None while no X/Y/Z script is loaded."""
    xyz = _xyz_module()
    if xyz is None:
        return None
    spec = METHODS[method]
    known = {option.label for option in xyz.axis_options}
    added = []
    for slot, param in spec.controls():
        label = axis_label(spec, slot, param)
        if not param.numeric or label in known:
            continue
        apply = lambda p, x, xs, slot=slot, name=param.name: set_override(p, method, slot, name, x)
        option = xyz.AxisOption(label, float if param.kind == "float" else int, apply)
        xyz.axis_options.append(option)
        added.append(option)
    return added
