"""A method's parameters, written once: each is a ComfyUI node input of the same name, default, range and
tooltip (nodes/widgets.py builds the inputs), a WebUI control (scripts/attnguide_webui/ui.py), a Forge
backend default (scripts/attnguide_webui/forge/params.py DEFAULTS), an infotext key and, if numeric, an X/Y/Z axis.

Argument order of every method in the WebUI: [enabled, *its params in table order]; SEGA repeats
its concept params once per concept slot before the method params.

params handed to the backends are keyed exactly like the node's execute() kwargs, with
these WebUI-side additions:
  sega:          "concepts" = [{prompt, direction, scale, warmup, cooldown, timing,
                 threshold, weight}, ...] (slots with an empty prompt left out; prompt
                 is text, the backend encodes it with the generation's text encoder)
  attend_excite: "prompt" = the generation's positive prompt text (p.prompt)
"""
from dataclasses import dataclass

KINDS = ("float", "int", "text", "choice")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    default: object
    label: str
    tooltip: str
    minimum: float = None
    maximum: float = None
    step: float = None
    choices: tuple = ()
    round: float = None          # ComfyUI's FLOAT rounding of the widget value
    multiline: bool = False      # a text box of several lines
    optional: bool = False       # ComfyUI: an optional input
    webui_tooltip: str = None    # where the WebUI needs other words (the node's text names its sockets)

    @property
    def webui_info(self):
        return self.webui_tooltip or self.tooltip

    @property
    def numeric(self):
        return self.kind in ("float", "int")

    def parse(self, value):
        """A value from the UI, the API, a pasted infotext or an X/Y/Z axis, as the node would get it."""
        if self.kind == "float":
            return float(value)
        if self.kind == "int":
            return int(round(float(value)))
        if self.kind == "choice":
            value = str(value)
            if value not in self.choices:
                raise ValueError(f"{self.label}: '{value}' is not one of {', '.join(self.choices)}")
            return value
        return "" if value is None else str(value)


@dataclass(frozen=True)
class MethodSpec:
    key: str             # the backends' method name
    title: str           # Script.title(): accordion label and the API's alwayson_scripts key
    short: str           # infotext / X/Y/Z prefix
    node_id: str         # the ComfyUI node whose execute() kwargs the params are
    params: tuple
    img2img: bool
    hires: str           # "apply": the hires-fix pass runs the method with the same settings; "skip"
    concept_params: tuple = ()   # SEGA: per concept slot (node AttnGuideSEGAConcept)
    concept_slots: int = 0

    def param(self, name):
        return next(p for p in (*self.params, *self.concept_params) if p.name == name)

    def values(self, params):
        """The method params out of `params`, which may hold more (the host's values): what its build takes."""
        return {p.name: params[p.name] for p in self.params}

    def controls(self):
        """(slot, Param) for every control after `enabled`, in argument order; slot None = method param."""
        out = [(slot, p) for slot in range(self.concept_slots) for p in self.concept_params]
        return out + [(None, p) for p in self.params]

    @property
    def infotext_prefix(self):
        """What every infotext key of this method starts with (its settings and its error entry)."""
        return f"AttnGuide {self.short} "

    def infotext_key(self, slot, param):
        where = f"{slot + 1} " if slot is not None else ""
        return f"{self.infotext_prefix}{where}{param.name}"

    @property
    def error_key(self):
        return f"{self.infotext_prefix}error"

    def read(self, args, overrides=None):
        """(enabled, params) from the Script's args; overrides {(slot, name): value} (X/Y/Z) win
        and turn the method on."""
        controls = self.controls()
        if len(args) != len(controls) + 1:
            raise ValueError(f"{self.title}: expected {len(controls) + 1} script args "
                             f"(enabled, {', '.join(p.name for _, p in controls)}), got {len(args)}")
        overrides = overrides or {}
        enabled = bool(args[0]) or bool(overrides)
        values = {}
        for (slot, param), value in zip(controls, args[1:]):
            values[(slot, param.name)] = param.parse(overrides.get((slot, param.name), value))
        params = {p.name: values[(None, p.name)] for p in self.params}
        if self.concept_slots:
            params["concepts"] = [
                {p.name: values[(slot, p.name)] for p in self.concept_params}
                for slot in range(self.concept_slots) if values[(slot, "prompt")].strip()]
        return enabled, params

    def infotext(self, params):
        """extra_generation_params entries for params as read()."""
        out = {self.infotext_key(None, p): params[p.name] for p in self.params}
        for slot, concept in enumerate(params.get("concepts", ())):
            out.update({self.infotext_key(slot, p): concept[p.name] for p in self.concept_params})
        return out


STEP_WINDOW = (
    Param("start_percent", "float", 0.0, "Start at", minimum=0.0, maximum=1.0, step=0.01,
          tooltip="First step the method is on, as a fraction of the steps the sampler runs (0 = first step)."),
    Param("end_percent", "float", 1.0, "End at", minimum=0.0, maximum=1.0, step=0.01,
          tooltip="The method is off from this fraction of the steps on (1 = on until the end). "
                  "Outside the window it costs nothing."),
)
