"""The pack in a real Forge WebUI (and reForge where REFORGE_WEBUI_PATH is set), headless on the CPU,
driven through its HTTP API (`--api --nowebui`) with the tiny checkpoint of setup_forge.sh: every
method changes the image, they stack (the panorama with SAG and Attend-and-Excite too), Attend-and-
Excite runs with DDIM, bad input comes back as HTTP 200 whose info names the error instead of the
settings, and nothing is left behind (a plain generation after each run equals the first, bit for bit)."""
import base64
import io

import pytest

from attnguide.methods import METHODS as SPECS
from payloads import request
from webui_payloads import PANORAMA_SIZE, error_of, info, method_keys, pixels

METHODS = ("sag", "pag", "sega", "attend_excite", "panorama", "pix2pix_zero")


def generate(webui, body, img2img=False):
    answer = webui.post("/sdapi/v1/img2img" if img2img else "/sdapi/v1/txt2img", body)  # raises unless HTTP 200
    return pixels(answer["images"][0]), info(answer)["extra_generation_params"]


class Baselines:
    """Plain generations, computed once per server and request shape."""

    def __init__(self, webui):
        self.webui, self.images = webui, {}

    def plain(self, **fields):
        key = tuple(sorted((k, str(v)) for k, v in fields.items()))
        if key not in self.images:
            self.images[key] = generate(self.webui, request(**fields), img2img="init_images" in fields)[0]
        return self.images[key]

    def assert_clean(self, **fields):
        """Nothing of a method run is left: a plain generation equals the first one bit for bit."""
        again = generate(self.webui, request(**fields), img2img="init_images" in fields)[0]
        assert again == self.plain(**fields), "a plain generation after the method run differs from the first"


@pytest.fixture(scope="module")
def plain(webui):
    return Baselines(webui)


@pytest.fixture(scope="module")
def init_image(webui, plain):
    """An img2img init image: the plain txt2img result as a PNG."""
    from PIL import Image
    raw = plain.plain()
    buffer = io.BytesIO()
    Image.frombytes("RGB", (64, 64), raw).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def fields_for(method, init_image=None):
    if method == "panorama":
        return dict(PANORAMA_SIZE)
    if method == "pix2pix_zero":
        return {"init_images": [init_image], "denoising_strength": 0.6}
    return {}


@pytest.mark.parametrize("method", METHODS)
def test_each_method_changes_the_image_and_leaves_nothing(webui, plain, init_image, method):
    fields = fields_for(method, init_image)
    image, extra = generate(webui, request(method, **fields), img2img="init_images" in fields)
    assert error_of(extra, method) is None, f"{method} was refused: {error_of(extra, method)}\n{webui.log_tail(3000)}"
    assert method_keys(extra, method), f"the infotext lists no {method} settings: {extra}"
    assert image != plain.plain(**fields), f"{method} did not change the image"
    plain.assert_clean(**fields)


def test_stacked_methods_differ_from_each_alone(webui, plain):
    stacked, extra = generate(webui, request("sag", "pag", "sega", "attend_excite"))
    for method in ("sag", "pag", "sega", "attend_excite"):
        assert error_of(extra, method) is None, error_of(extra, method)
        assert stacked != generate(webui, request(method))[0], f"the stack gave {method}'s image alone"
    assert stacked != plain.plain()
    plain.assert_clean()


@pytest.mark.parametrize("method", ["sag", "attend_excite", "sega"])
def test_panorama_stacks_with_per_window_methods(webui, plain, method):
    """SAG, Attend-and-Excite and SEGA run per window with the panorama (as in ComfyUI), not refused; a batch
    of 2 images in 2-window batches."""
    fields = dict(PANORAMA_SIZE, batch_size=2)
    both, extra = generate(webui, request("panorama", method, **fields))
    assert error_of(extra, "panorama") is None and error_of(extra, method) is None, extra
    assert method_keys(extra, method) and method_keys(extra, "panorama")
    assert both != generate(webui, request("panorama", **fields))[0], f"{method} did not change the panorama"
    plain.assert_clean(**PANORAMA_SIZE)


def test_attend_and_excite_runs_with_ddim(webui, plain):
    """Forge's DDIM has no get_sigmas; the schedule of its timesteps is served, so the method moves the latent."""
    image, extra = generate(webui, request("attend_excite", sampler_name="DDIM"))
    assert error_of(extra, "attend_excite") is None, error_of(extra, "attend_excite")
    assert image != plain.plain(sampler_name="DDIM"), "Attend-and-Excite did nothing with DDIM"
    assert "sigmas are unknown" not in webui.log_text()
    plain.assert_clean(sampler_name="DDIM")


@pytest.mark.parametrize("sampler", ["DDIM", "PLMS", "UniPC"])
def test_step_windows_advance_with_timestep_samplers(webui, plain, sampler):
    """SAG on only the second half of the steps differs from SAG on all of them: the steps are counted."""
    half, extra = generate(webui, request("sag", sampler_name=sampler, overrides={"sag": {"start_percent": 0.5}}))
    full, _ = generate(webui, request("sag", sampler_name=sampler))
    assert error_of(extra, "sag") is None
    assert half != full and half != plain.plain(sampler_name=sampler)
    assert "sigmas are unknown" not in webui.log_text()


def test_attend_and_excite_refuses_plms_in_the_info(webui, plain):
    image, extra = generate(webui, request("attend_excite", sampler_name="PLMS"))
    assert "the sampler PLMS is not served" in (error_of(extra, "attend_excite") or ""), extra
    assert image == plain.plain(sampler_name="PLMS")


@pytest.mark.parametrize("method,override,message", [
    ("sag", {"layer": "x9"}, "x9"),
    ("attend_excite", {"words": "giraffe"}, "'giraffe' is not in the prompt"),
    ("panorama", {"window_width": 100}, "window_width: 100 px is not a multiple"),
])
def test_bad_input_is_http_200_with_the_error_in_info(webui, plain, method, override, message):
    fields = dict(PANORAMA_SIZE) if method == "panorama" else {}
    image, extra = generate(webui, request(method, overrides={method: override}, **fields))
    keys = method_keys(extra, method)
    assert list(keys) == [f"AttnGuide {SPECS[method].short} error"], keys
    assert message in error_of(extra, method)
    assert image == plain.plain(**fields), "a refused method changed the image"
    plain.assert_clean(**fields)
