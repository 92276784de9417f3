"""ComfyUI inputs from a method's parameters (methods/): one input per Param, with its name, default,
range and tooltip, so a node's widgets and the WebUI's controls come from one table."""
from .comfy_api_compat import io

CATEGORY = "attnguide"


def widget(param):
    extra = {"tooltip": param.tooltip}
    if param.optional:
        extra["optional"] = True
    if param.kind == "float":
        if param.round is not None:
            extra["round"] = param.round
        return io.Float.Input(param.name, default=param.default, min=param.minimum, max=param.maximum,
                              step=param.step, **extra)
    if param.kind == "int":
        if param.step is not None:
            extra["step"] = param.step
        return io.Int.Input(param.name, default=param.default, min=param.minimum, max=param.maximum, **extra)
    if param.kind == "choice":
        return io.Combo.Input(param.name, options=list(param.choices), default=param.default, **extra)
    if param.multiline:
        extra["multiline"] = True
    return io.String.Input(param.name, default=param.default, **extra)


def widgets(spec, *names):
    """The inputs of `spec`'s params named, in that order; all its method params (table order) when none is named."""
    return [widget(p) for p in ([spec.param(n) for n in names] if names else spec.params)]
