"""The accordion of one method: an enable checkbox (InputAccordion) and one control per
param; sets the Script's infotext_fields / paste_field_names so "paste" and "Send to"
restore them. Returns the components in argument order (the web API's args order)."""
SLIDER_SPAN = 100  # wider ranges get a number box


def build(script, spec, is_img2img):
    import gradio as gr
    from modules.ui_components import InputAccordion

    tab = "img2img" if is_img2img else "txt2img"
    components, fields = [], []

    def add(slot, param):
        where = "" if slot is None else f"{slot + 1}_"
        label = param.label if slot is None else f"{param.label} {slot + 1}"
        component = _component(gr, param, f"attnguide_{spec.key}_{tab}_{where}{param.name}", label)
        components.append(component)
        fields.append((component, spec.infotext_key(slot, param)))

    with InputAccordion(False, label=spec.title, elem_id=f"attnguide_{spec.key}_{tab}") as enabled:
        for slot in range(spec.concept_slots):
            with gr.Group():
                for param in spec.concept_params:
                    add(slot, param)
        for param in spec.params:
            add(None, param)
    keys = [key for _, key in fields]
    script.infotext_fields = [(enabled, lambda d, keys=keys: any(k in d for k in keys))] + fields
    script.paste_field_names = keys
    return [enabled, *components]


def _component(gr, param, elem_id, label):
    common = dict(label=label, value=param.default, elem_id=elem_id, info=param.webui_info)
    if param.kind == "choice":
        return gr.Dropdown(choices=list(param.choices), **common)
    if param.kind == "text":
        return gr.Textbox(**common)
    if param.maximum - param.minimum <= SLIDER_SPAN:
        return gr.Slider(minimum=param.minimum, maximum=param.maximum, step=param.step or 1, **common)
    return gr.Number(minimum=param.minimum, maximum=param.maximum, precision=0 if param.kind == "int" else None, **common)
