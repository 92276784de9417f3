"""ComfyUI inputs from a method's parameters (methods/): one input per Param, with its name, default,
range and tooltip, so a node's widgets and the WebUI's controls come from one table."""
from .comfy_api_compat import io

CATEGORY = "attnguide"
# the models the attention methods (SAG, PAG) serve
ATTENTION_MODELS = "A UNet (SD1.x, SD2.x, SDXL) or an SD3/SD3.5, Flux-family or Qwen-Image transformer."


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


def model_patch(spec):
    """The inputs and outputs of a node that returns the MODEL patched with `spec`'s method."""
    return {"inputs": [io.Model.Input("model", tooltip=ATTENTION_MODELS), *widgets(spec)], "outputs": [io.Model.Output()]}
