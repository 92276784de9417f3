"""How the ComfyUI frontend lays a saved workflow's widgets_values onto a node's widgets, and where
nodes sit on the canvas: shared by the file-only test (tests/comfy/test_example_workflows.py) and the
browser test (tests/comfy/test_frontend_workflows.py).

The frontend makes one widget per INT/FLOAT/STRING/BOOLEAN/COMBO input, in the node's input order,
and after an INT input with `control_after_generate` (or, when the option is absent, an INT input
named seed or noise_seed: the legacy convention) one more, "control_after_generate", whose value is
saved too. widgets_values is read by position, so a missing control value shifts every later one.
"""

CONTROL = "control_after_generate"
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT: a node's title bar sits above its pos


def has_control(name, type_, options=None):
    if type_ != "INT":
        return False
    flag = (options or {}).get(CONTROL)
    return bool(flag) if flag is not None else name in ("seed", "noise_seed")


def widget_names(inputs):
    """[(name, type, options)] of a node's widget inputs in order -> the frontend's widget names."""
    names = []
    for name, type_, options in inputs:
        names.append(name)
        if has_control(name, type_, options):
            names.append(CONTROL)
    return names


def object_info_inputs(info):
    """A node's widget inputs, (name, type, options) in the frontend's order, from /object_info."""
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    out = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = info["input"][section][name]
            type_ = "COMBO" if isinstance(spec[0], list) else spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if type_ in WIDGET_TYPES and not options.get("forceInput"):
                out.append((name, type_, options))
    return out


def file_meaning(inputs, values):
    """What a saved node means: [(widget name, value)] read the way its author wrote it, one value per
    input and a control value only where the file has one. Also the values left over, if any."""
    values = list(values)
    pairs = []
    for name, type_, options in inputs:
        if not values:
            break
        pairs.append((name, values.pop(0)))
        if has_control(name, type_, options) and values and values[0] in CONTROL_VALUES:
            pairs.append((CONTROL, values.pop(0)))
    return pairs, values


def missing_controls(inputs, values):
    """Names of the inputs whose control_after_generate value the file lacks (the frontend then shifts
    every later value by one)."""
    missing, values = [], list(values)
    for name, type_, options in inputs:
        if not values:
            break
        values.pop(0)
        if has_control(name, type_, options):
            if values and values[0] in CONTROL_VALUES:
                values.pop(0)
            else:
                missing.append(name)
    return missing


def node_box(pos, size):
    """[x, y, w, h] on the canvas, title bar included (as LGraphNode.getBounding)."""
    return [pos[0], pos[1] - TITLE_HEIGHT, size[0], size[1] + TITLE_HEIGHT]


def overlapping(boxes):
    """[(a, b)] of the ids whose boxes ({id: [x, y, w, h]}) share some area."""
    ids = sorted(boxes)
    out = []
    for i, a in enumerate(ids):
        ax, ay, aw, ah = boxes[a]
        for b in ids[i + 1:]:
            bx, by, bw, bh = boxes[b]
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                out.append((a, b))
    return out
