"""Requests for a real A1111-family WebUI's API and what its answers hold: small, fast generations on the
tiny checkpoint, each method's `alwayson_scripts` entry, {title: {"args": [enabled, *controls]}}, in the
argument order of methods/spec.py (MethodSpec.controls: the Script's controls), the answer's images as
pixels and its infotext entries. A host with other fields or settings makes its own Requests."""
import base64
import hashlib
import io
import json

from attnguide.methods import METHODS

PROMPT = "a cat and a frog"
BASE = {"prompt": PROMPT, "negative_prompt": "", "seed": 1234, "steps": 4, "width": 64, "height": 64, "cfg_scale": 5.0,
        "sampler_name": "Euler", "batch_size": 1, "n_iter": 1, "save_images": False, "send_images": True}

# settings under which each method changes the tiny checkpoints' 64x64 image (panorama: 128x64, below). SAG and
# PAG on a layer of the first level (d1, 8x8): at 64x64 the middle block is 1x1 (A1111's checkpoint; there
# self-attention is the identity) or 2x2 (Forge's)
SETTINGS = {
    "sag": {"scale": 2.0, "layer": "d1.0"},
    "pag": {"scale": 3.0, "layers": "d1"},
    "sega": {"concepts": [{"prompt": "a red hat", "warmup": 0}]},
    "attend_excite": {"words": "cat, frog", "thresholds": "0: 0.9", "max_excite_steps": "3"},
    "panorama": {"window_width": 64, "window_height": 64, "stride": 32},
    # sentences, not words: a few of the 16 template sentences make the tiny checkpoint's random text encoder
    # give NaN (plain A1111 fails on them as prompts too), which Pix2Pix-Zero refuses
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


class Requests:
    """txt2img/img2img bodies on one host's base fields and method settings."""

    def __init__(self, base=BASE, settings=SETTINGS):
        self.base, self.settings = base, settings

    def scripts(self, *methods, **overrides):
        """alwayson_scripts for these methods with the settings, overrides[method] = {name: value} on top."""
        return {METHODS[m].title.lower(): {"args": script_args(m, **{**self.settings[m], **overrides.get(m, {})})}
                for m in methods}

    def __call__(self, *methods, overrides=None, **fields):
        """A body with these methods on; fields replace the base fields."""
        body = {**self.base, **fields}
        if methods:
            body["alwayson_scripts"] = self.scripts(*methods, **(overrides or {}))
        return body


request = Requests()


def method_keys(extra, method):
    """The infotext entries of `method` (its settings, or its error entry)."""
    prefix = f"AttnGuide {METHODS[method].short} "
    return {k: v for k, v in extra.items() if k.startswith(prefix)}


def error_of(extra, method):
    return extra.get(f"AttnGuide {METHODS[method].short} error")


class Pixels(bytes):
    """Raw RGB bytes that print as a short digest in assertion messages."""

    def __repr__(self):
        return f"<image {hashlib.sha256(self).hexdigest()[:12]}, {len(self)} bytes>"


def pixels(image_b64):
    """An answer's image as raw RGB bytes (the PNG's text chunks, which hold the infotext, left out)."""
    from PIL import Image
    with Image.open(io.BytesIO(base64.b64decode(image_b64.split(",", 1)[-1]))) as image:
        return Pixels(image.convert("RGB").tobytes())


def info(answer):
    """The `info` of a txt2img / img2img answer, parsed (the WebUI sends it as a JSON string)."""
    return json.loads(answer["info"])
