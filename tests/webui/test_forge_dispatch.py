"""The WebUI scripts' side of the Forge/reForge contract: on those hosts every method's
process_before_every_sampling hands forge/backend.apply(method, unet_patcher, params) the
node-keyed params and assigns the patcher it returns back to p.sd_model.forge_objects.unet.
The backend here is a stand-in that records its calls (the real one is tested on its own)."""
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import a1111_double as a1  # noqa: E402

from attnguide.scripts import attnguide_webui  # noqa: E402
from attnguide.scripts.attnguide_webui import which_host  # noqa: E402
from attnguide.scripts.attnguide_webui.script import MethodScript  # noqa: E402

from attnguide.scripts.attnguide_webui.forge.params import HOST_PARAMS  # noqa: E402

BACKEND = f"{attnguide_webui.__name__}.forge.backend"


@pytest.fixture
def forge(monkeypatch):
    h = a1.install()
    calls = []
    backend = types.ModuleType(BACKEND)
    backend.apply = lambda method, unet, params: calls.append((method, unet, params)) or f"{unet}+{method}"
    monkeypatch.setitem(sys.modules, BACKEND, backend)
    monkeypatch.setattr(which_host, "host", lambda: "forge")
    yield h, calls
    a1.uninstall(h)


def script(method):
    return type(f"Script_{method}", (MethodScript, a1.Script), {"spec": attnguide_webui.METHODS[method]})()


def processing():
    sd_model = types.SimpleNamespace(forge_objects=types.SimpleNamespace(unet="unet"), cond_stage_model=a1.TextModel(["a", "cat"]))
    p = a1.Processing(sd_model, None, [], prompt="a cat")
    p.is_hr_pass = False
    return p


def test_every_method_reaches_the_backend_with_node_kwargs(forge):
    h, calls = forge
    p = processing()
    sag, pag, ae, sega = script("sag"), script("pag"), script("attend_excite"), script("sega")
    sag.process_before_every_sampling(p, True, 0.5, 1.0, 1.0, "m0.0", 0.0, 1.0, x=None)
    pag.process_before_every_sampling(p, True, 3.0, 0.0, "m0", 0.0, 0.0, 1.0, x=None)
    ae.process_before_every_sampling(p, True, "cat", "25", "", 20.0, 1.0, 0.5, 20, 0.5, 4, "", x=None)
    concept = ["glasses", "remove", 5.0, 10, -1, "steps", 0.9, 1.0]
    sega.process_before_every_sampling(p, True, *concept, *([""] + concept[1:]) * 2, 0.1, 0.4, x=None)
    assert [c[0] for c in calls] == ["sag", "pag", "attend_excite", "sega"]
    assert [c[1] for c in calls] == ["unet", "unet+sag", "unet+sag+pag", "unet+sag+pag+attend_excite"]
    assert p.sd_model.forge_objects.unet == "unet+sag+pag+attend_excite+sega"
    # what only the WebUI knows rides along (forge/webui.py host_params): the run's sigmas, SEGA's encoder, A&E's tokenizer
    assert [sorted(set(c[2]) & set(HOST_PARAMS)) for c in calls] == [
        ["sigmas"], ["sigmas"], ["sigmas", "tokenize"], ["encode", "sigmas"]]
    assert calls[2][2]["tokenize"]("a cat")[1][2] == "cat</w>"
    calls = [(m, u, {k: v for k, v in params.items() if k not in HOST_PARAMS}) for m, u, params in calls]
    assert calls[0][2] == dict(scale=0.5, blur_sigma=1.0, threshold=1.0, layer="m0.0", start_percent=0.0, end_percent=1.0)
    assert calls[2][2]["prompt"] == "a cat" and calls[2][2]["words"] == "cat"
    assert calls[3][2] == dict(momentum_scale=0.1, momentum_beta=0.4, concepts=[dict(
        prompt="glasses", direction="remove", scale=5.0, warmup=10.0, cooldown=-1.0, timing="steps", threshold=0.9, weight=1.0)])


def test_disabled_and_hires_skip(forge):
    h, calls = forge
    p = processing()
    script("sag").process_before_every_sampling(p, False, 0.5, 1.0, 1.0, "m0.0", 0.0, 1.0, x=None)
    p.is_hr_pass = True
    script("attend_excite").process_before_every_sampling(p, True, "cat", "25", "", 20.0, 1.0, 0.5, 20, 0.5, 4, "", x=None)
    assert calls == [] and p.sd_model.forge_objects.unet == "unet"


def test_missing_backend_is_said(monkeypatch, caplog):
    h = a1.install()
    try:
        monkeypatch.setattr(which_host, "host", lambda: "reforge")
        monkeypatch.setattr(which_host, "load_forge_backend", lambda: None)
        p = processing()
        script("pag").process_before_every_sampling(p, True, 3.0, 0.0, "m0", 0.0, 0.0, 1.0, x=None)
        assert p.sd_model.forge_objects.unet == "unet"
        assert any("Forge/reForge backend of AttnGuide is not installed" in r.getMessage() for r in caplog.records)
    finally:
        a1.uninstall(h)


def test_pix2pix_zero_gets_the_init_latent_and_encoder(forge):
    h, calls = forge
    p = processing()
    p.init_latent = "init latent"
    p.sd_model.get_learned_conditioning = lambda texts: list(texts)
    p.width = p.height = 64
    script("pix2pix_zero").process_before_every_sampling(p, True, "cat", "dog", 0.1, 20.0, 20.0, 5, 5, 0, x=None)
    (method, unet, params), = calls
    assert method == "pix2pix_zero" and p.sd_model.forge_objects.unet == "unet+pix2pix_zero"
    assert params["init_latent"] == "init latent" and params["encode"](["a cat."]) == ["a cat."]
    assert {k: v for k, v in params.items() if k not in HOST_PARAMS} == dict(
        source="cat", target="dog", guidance_amount=0.1, lambda_auto_corr=20.0, lambda_kl=20.0, regularization_steps=5,
        auto_corr_rolls=5, seed=0)
