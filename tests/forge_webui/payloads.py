"""Requests for a real Forge WebUI's API: small, fast generations on the tiny checkpoint
(setup_forge.sh) and each method's `alwayson_scripts` entry, {title: {"args": [enabled, *controls]}},
in the argument order of scripts/attnguide_webui/params.py (the Script's controls)."""
from attnguide.scripts.attnguide_webui.params import METHODS

PROMPT = "a cat and a frog"
BASE = {"prompt": PROMPT, "negative_prompt": "", "seed": 1234, "steps": 4, "width": 64, "height": 64, "cfg_scale": 5.0,
        "sampler_name": "Euler", "scheduler": "Automatic", "batch_size": 1, "n_iter": 1, "save_images": False,
        "send_images": True}

# settings under which each method changes the tiny checkpoint's 64x64 image. The tiny UNet's
# self-attention layers are d1, d3, d5, m0, u0-u5; at 64x64 px its middle block is 2x2 latent positions,
# so SAG and PAG act on the first level (d1, 8x8)
SETTINGS = {
    "sag": {"scale": 2.0, "layer": "d1.0"},
    "pag": {"scale": 3.0, "layers": "d1"},
    "sega": {"concepts": [{"prompt": "a red hat", "warmup": 0}]},
    "attend_excite": {"words": "cat, frog", "thresholds": "0: 0.9", "max_excite_steps": "3"},
    "panorama": {"window_width": 64, "window_height": 64, "stride": 32, "window_batch": 2},
    "pix2pix_zero": {"source": "a photo of a cat.\na photo of the cat.", "target": "a photo of a dog.\na photo of the dog."},
}
PANORAMA_SIZE = {"width": 128, "height": 64}


def script_args(method, enabled=True, **settings):
    """[enabled, *controls] with the node defaults, `settings` replacing them; SEGA's concept
    slots come as concepts=[{name: value}, ...]."""
    spec = METHODS[method]
    concepts = settings.pop("concepts", [])
    values = [enabled]
    for slot, param in spec.controls():
        if slot is None:
            values.append(settings.get(param.name, param.default))
        else:
            concept = concepts[slot] if slot < len(concepts) else {}
            values.append(concept.get(param.name, param.default))
    unknown = set(settings) - {p.name for p in spec.params}
    assert not unknown, f"{method} has no setting {unknown}"
    return values


def request(*methods, overrides=None, **fields):
    """A txt2img/img2img body with these methods on (SETTINGS, overrides[method] on top)."""
    body = {**BASE, **fields}
    if methods:
        overrides = overrides or {}
        body["alwayson_scripts"] = {METHODS[m].title.lower(): {"args": script_args(m, **{**SETTINGS[m], **overrides.get(m, {})})}
                                    for m in methods}
    return body


def method_keys(extra, method):
    """The infotext entries of `method` (its settings, or its error entry)."""
    prefix = f"AttnGuide {METHODS[method].short} "
    return {k: v for k, v in extra.items() if k.startswith(prefix)}


def error_of(extra, method):
    return extra.get(f"AttnGuide {METHODS[method].short} error")
