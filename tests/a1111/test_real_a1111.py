"""The pack as an extension of a real A1111 v1.10.1 (A1111_PATH; tests/support/a1111_host.py),
API only (`--api --nowebui`), driven through its HTTP API on the tiny checkpoint.

Served = the image differs from the plain one with the same seed by at least MIN_EFFECT (mean
absolute difference of the 8-bit pixels), the method's settings are in the answer's infotext and
no error entry is. Refused = HTTP 200, the image equals the plain one bit for bit, and the infotext
carries `AttnGuide <method> error` with the reason instead of the method's settings (script.refuse:
A1111 runs every script hook inside try/except, so the generation itself cannot fail).
After every run with a method, a plain run must equal the plain baseline bit for bit."""
import threading
import time

import pytest

import webui_payloads as P
from webui_payloads import info, pixels

MIN_EFFECT = 1.0
TXT2IMG_METHODS = ("sag", "pag", "sega", "attend_excite", "panorama")
IMG2IMG_METHODS = ("sag", "pag", "sega", "panorama", "pix2pix_zero")
SAMPLERS = ("Euler", "Euler a", "DPM++ 2M", "DDIM", "PLMS", "UniPC")
# what A1111 cannot serve, with the message that says so (the README's list)
NOT_SERVED = {("attend_excite", "PLMS"): "the sampler PLMS is not served",
              ("attend_excite", "UniPC"): "the sampler UniPC is not served"}


def effect(a, b):
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


class Plain:
    """Plain generations, one per request shape, made before any method ran with that shape."""

    def __init__(self, server):
        self.server, self.images = server, {}

    def __call__(self, endpoint="txt2img", **fields):
        key = (endpoint, repr(sorted(fields.items())))
        if key not in self.images:
            self.images[key] = generate(self.server, P.request(**fields), endpoint)[0]
        return self.images[key]

    def check_clean(self, endpoint="txt2img", **fields):
        """Nothing is left: the plain request now gives the baseline, bit for bit."""
        assert generate(self.server, P.request(**fields), endpoint)[0] == self(endpoint, **fields), \
            "a plain generation after the method run differs from the plain baseline"


def generate(server, body, endpoint="txt2img"):
    """(the images as RGB bytes, the infotext's extra_generation_params)"""
    answer = server.post(f"/sdapi/v1/{endpoint}", body)
    return [pixels(image) for image in answer["images"]], info(answer)["extra_generation_params"]


@pytest.fixture(scope="module")
def plain(a1111):
    return Plain(a1111)


@pytest.fixture(autouse=True)
def no_errors_in_the_log(a1111):
    """No script error (A1111's '*** Error ...' reports) and no traceback in the server's output."""
    start = len(a1111.log_text())
    yield
    new = a1111.log_text()[start:]
    bad = [line for line in new.splitlines() if line.startswith("*** Error") or "Traceback" in line]
    assert not bad, new[-6000:]


def assert_served(images, extra, baseline, *methods):
    for method in methods:
        assert P.error_of(extra, method) is None, P.error_of(extra, method)
        assert P.method_keys(extra, method), f"no infotext of {method}: {extra}"
    for image, plain_image in zip(images, baseline, strict=True):
        assert effect(image, plain_image) >= MIN_EFFECT, f"{methods} did not change the image"


def assert_refused(images, extra, baseline, method, message):
    error = P.error_of(extra, method)
    assert error is not None and message in error, (message, extra)
    assert "<function" not in error
    assert list(P.method_keys(extra, method)) == [f"AttnGuide {P.METHODS[method].short} error"], extra
    assert images == baseline


def test_scripts_are_listed(a1111):
    titles = {m: P.METHODS[m].title.lower() for m in P.METHODS}
    listed = a1111.get("/sdapi/v1/scripts")
    assert {titles[m] for m in TXT2IMG_METHODS} <= set(listed["txt2img"])
    assert titles["pix2pix_zero"] not in listed["txt2img"]  # img2img only
    assert {titles[m] for m in IMG2IMG_METHODS} <= set(listed["img2img"])


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("method", TXT2IMG_METHODS)
def test_txt2img_method_and_sampler(a1111, plain, method, sampler):
    size = P.PANORAMA_SIZE if method == "panorama" else {}
    baseline = plain(sampler_name=sampler, **size)
    images, extra = generate(a1111, P.request(method, sampler_name=sampler, **size))
    if (method, sampler) in NOT_SERVED:
        assert_refused(images, extra, baseline, method, NOT_SERVED[method, sampler])
    else:
        assert_served(images, extra, baseline, method)
    plain.check_clean(sampler_name=sampler, **size)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_all_txt2img_methods_stacked(a1111, plain, sampler):
    baseline = plain(sampler_name=sampler, **P.PANORAMA_SIZE)
    images, extra = generate(a1111, P.request(*TXT2IMG_METHODS, sampler_name=sampler, **P.PANORAMA_SIZE))
    served = [m for m in TXT2IMG_METHODS if (m, sampler) not in NOT_SERVED]
    assert_served(images, extra, baseline, *served)
    for method in set(TXT2IMG_METHODS) - set(served):
        assert NOT_SERVED[method, sampler] in P.error_of(extra, method)
    plain.check_clean(sampler_name=sampler, **P.PANORAMA_SIZE)


def test_batch_of_two(a1111, plain):
    methods = ("sag", "pag", "sega", "attend_excite")
    baseline = plain(batch_size=2)
    images, extra = generate(a1111, P.request(*methods, batch_size=2))
    assert len(images) == 2
    assert_served(images, extra, baseline, *methods)
    plain.check_clean(batch_size=2)


HIRES = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 2, "denoising_strength": 0.6}


def test_hires_fix(a1111, plain):
    """SAG, PAG and SEGA run in both passes, Attend-and-Excite in the first only (the specs' hires policy, methods/)."""
    methods = ("sag", "pag", "sega", "attend_excite")
    baseline = plain(**HIRES)
    images, extra = generate(a1111, P.request(*methods, **HIRES))
    assert len(images[0]) == 128 * 128 * 3
    assert_served(images, extra, baseline, *methods)
    plain.check_clean(**HIRES)


@pytest.fixture(scope="module")
def init_image(a1111):
    """A generated 128x64 image (base64 PNG) to start img2img from."""
    answer = a1111.post("/sdapi/v1/txt2img", P.request(seed=99, **P.PANORAMA_SIZE))
    return answer["images"][0]


def img2img_fields(init_image, sampler="Euler"):
    return {"init_images": [init_image], "denoising_strength": 0.6, "sampler_name": sampler, **P.PANORAMA_SIZE}


@pytest.mark.parametrize("method", IMG2IMG_METHODS)
def test_img2img_method(a1111, plain, init_image, method):
    fields = img2img_fields(init_image)
    baseline = plain("img2img", **fields)
    images, extra = generate(a1111, P.request(method, **fields), "img2img")
    assert_served(images, extra, baseline, method)
    plain.check_clean("img2img", **fields)


def test_img2img_all_stacked(a1111, plain, init_image):
    fields = img2img_fields(init_image)
    baseline = plain("img2img", **fields)
    images, extra = generate(a1111, P.request(*IMG2IMG_METHODS, **fields), "img2img")
    assert_served(images, extra, baseline, *IMG2IMG_METHODS)
    plain.check_clean("img2img", **fields)


def test_pix2pix_zero_with_a_timestep_sampler_is_refused(a1111, plain, init_image):
    fields = img2img_fields(init_image, "DDIM")
    baseline = plain("img2img", **fields)
    images, extra = generate(a1111, P.request("pix2pix_zero", **fields), "img2img")
    assert_refused(images, extra, baseline, "pix2pix_zero", "the sampler DDIM is a timestep sampler")
    plain.check_clean("img2img", **fields)


BAD_INPUTS = [  # (method, settings, part of the message)
    ("sag", {"layer": "m7"}, "layer: 'm7' names no attention layer"),
    ("pag", {"layers": "q3"}, "layers"),
    ("attend_excite", {"words": "dog"}, "'dog' is not in the prompt"),
    ("attend_excite", {"token_indices": "2, 80"}, "token index 80 is past the prompt's last position (75)"),
    ("sega", {"concepts": [{"prompt": "a hat", "direction": "sideways"}]}, "'sideways' is not one of add, remove"),
    ("sega", {"concepts": [{"prompt": "a hat", "weight": -1.0}]}, "weight is -1.0; it must be >= 0"),
    ("panorama", {"stride": 0}, "stride"),
    ("panorama", {"stride": 60}, "stride: 60 px is not a multiple of the latent scale (8 px)"),
    ("panorama", {"window_width": 32, "window_height": 32, "stride": 64}, "larger than the window"),
]


@pytest.mark.parametrize("method, settings, message", BAD_INPUTS, ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(BAD_INPUTS)])
def test_bad_input_is_in_the_infotext(a1111, plain, method, settings, message):
    """The run answers 200 with the plain image; its info names the error and drops the settings,
    and the other method of the request still runs."""
    other = "sega" if method != "sega" else "pag"
    size = P.PANORAMA_SIZE if method == "panorama" else {}
    only_other = generate(a1111, P.request(other, **size))[0]
    answer = a1111.post("/sdapi/v1/txt2img", P.request(method, other, overrides={method: settings}, **size))
    extra = info(answer)["extra_generation_params"]
    error = P.error_of(extra, method)
    assert error is not None and message in error, extra
    assert list(P.method_keys(extra, method)) == [f"AttnGuide {P.METHODS[method].short} error"]
    assert f"AttnGuide {P.METHODS[method].short} error: " in info(answer)["infotexts"][0]
    assert P.error_of(extra, other) is None and P.method_keys(extra, other)
    assert [pixels(i) for i in answer["images"]] == only_other
    plain.check_clean(**size)


def test_interrupt_then_plain_run_equals_baseline(a1111, plain):
    baseline = plain()
    steps = 400
    answers = []
    worker = threading.Thread(target=lambda: answers.append(
        a1111.post("/sdapi/v1/txt2img", P.request("sag", "pag", "sega", steps=steps))))
    worker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = a1111.get("/sdapi/v1/progress?skip_current_image=true")["state"]
        if state.get("sampling_step", 0) >= 2:
            break
        time.sleep(0.2)
    a1111.post("/sdapi/v1/interrupt")
    worker.join(300)
    assert answers, "the interrupted request did not answer"
    state = a1111.get("/sdapi/v1/progress?skip_current_image=true")["state"]
    assert state["interrupted"] and state["sampling_step"] < steps - 1, state
    plain.check_clean()
    assert generate(a1111, P.request())[0] == baseline
