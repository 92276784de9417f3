"""Shared by the A1111 script tests: a real ldm UNetModel and its diffusers twin (same
weights), one txt2img generation through the scripts inside the A1111 double, and the
core's diffusers-equal composition on the sigma-space host as the reference."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS / "sag_pag"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import a1111_double as a1  # noqa: E402
import tiny_diffusers as td  # noqa: E402
from sigma_host import Cond, SigmaHost, SigmaSchedule, ddim_schedule, host_layers  # noqa: E402,F401 (re-exported)
from test_sag_pag_vs_diffusers import pag_method, sag_method  # noqa: E402,F401 (re-exported)

from attnguide.attention.layers import parse_layers  # noqa: E402,F401 (re-exported)
from attnguide.attention.router import Router  # noqa: E402

TOLERANCE, MIN_EFFECT, STEPS, TOKENS = 1e-4, 1e-3, 4, 8
SCRIPTS = ("attnguide_sag", "attnguide_pag", "attnguide_sega", "attnguide_panorama", "attnguide_attend_excite")


def ldm_unet(seed=0):
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    torch.manual_seed(seed)
    unet = UNetModel(image_size=16, in_channels=4, out_channels=4, model_channels=32, attention_resolutions=[1, 2],
                     num_res_blocks=1, channel_mult=[1, 2], num_heads=8, use_spatial_transformer=True,
                     transformer_depth=1, context_dim=td.SD1_CONTEXT_DIM, use_checkpoint=False, legacy=False).eval()
    with torch.no_grad():
        for p in unet.parameters():  # ldm zero-initialises some outputs; random everywhere so attention matters
            p.copy_(torch.randn_like(p) * 0.2)
    return unet.requires_grad_(False)


@pytest.fixture(scope="module")
def models():
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    unet = ldm_unet()
    twin = td.sd1_unet(seed=1)
    twin.load_state_dict(convert_ldm_unet_checkpoint(
        {"model.diffusion_model." + k: v for k, v in unet.state_dict().items()}, twin.config), strict=True)
    return unet, twin, td.ddim().alphas_cumprod.clone()


def load_script(name):
    """As A1111's script_loading.load_module (modules/script_loading.py:10): module named after the file."""
    path = ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(path.name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from attnguide.scripts.attnguide_webui.script import MethodScript
    return [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, sys.modules["modules.scripts"].Script)
            and issubclass(v, MethodScript)]


@pytest.fixture
def host(models):
    unet, _, alphas = models
    h = a1.install(a1.SDModel(unet, alphas))
    h.classes = [cls for name in SCRIPTS for cls in load_script(name)]
    yield h
    a1.uninstall(h)


def leftovers(unet, h):
    """Everything the pack could have left on the model or in the callbacks."""
    left = [name for name, m in unet.named_modules() if "forward" in m.__dict__]
    left += [f"pre-hook on {n}" for n, m in unet.named_modules() if m._forward_pre_hooks]
    left += [f"hook on {n}" for n, m in unet.named_modules() if m._forward_hooks]
    left += [f"callback {k}" for k, v in h.callbacks.callback_map.items() if k != "before_ui" and v]
    return left


def inputs(batch, size=128, seed=1):
    noise = td.randn((batch, 4, size // 8, size // 8), seed)
    return noise, td.randn((batch, TOKENS, td.SD1_CONTEXT_DIM), seed + 1), td.randn((batch, TOKENS, td.SD1_CONTEXT_DIM), seed + 2)


def a1111_schedule(kind, alphas):
    """The sigma-space schedule that A1111's sampler of this kind runs at STEPS."""
    if kind == "euler":
        return ddim_schedule(td.ddim(), STEPS)
    ts = a1.ddim_timesteps(STEPS).tolist()[::-1]          # DDIM evaluates timesteps[-1] .. timesteps[1]
    abar = alphas.double()
    sig = lambda t: float(((1 - abar[t]) / abar[t]).sqrt())
    return SigmaSchedule([sig(t) for t in ts], ts[:-1], float(1 / abar[ts[0]].sqrt()), float(abar[ts[-1]].sqrt()))


def generate(h, args, kind="euler", cfg=7.5, batch=1, cond=None, uncond=None, noise=None, weights=None, sample_hook=None,
             prompt="a prompt", hires=None):
    """One txt2img generation through the scripts: args = {title: [enabled, *params]}."""
    runner = a1.ScriptRunner(h.classes)
    script_args = runner.defaults()
    for script in runner.scripts:
        if script.title() in args:
            script_args[script.args_from:script.args_to] = args[script.title()]
    sd_model = h.shared.sd_model
    p = a1.Processing(sd_model, runner, script_args, cfg_scale=cfg, steps=STEPS, prompt=prompt)
    schedule = a1111_schedule(kind, sd_model.alphas_cumprod)
    sampler = a1.Sampler(h.shared, h.callbacks, "Euler" if kind == "euler" else "DDIM")
    conditioning = a1.conditioning(cond, weights)
    unconditioning = a1.unconditioning(uncond)

    def run(x):  # as sd_samplers_kdiffusion.py:230 / sd_samplers_timesteps.py:160 call the sampler function
        extra = sampler.sampler_extra_args
        callback = sample_hook or sampler.callback_state
        if kind == "euler":
            sigmas = torch.tensor(schedule.sigmas, dtype=torch.float32)
            return sampler.func(sampler.model_wrap_cfg, x * schedule.scale_in, extra_args=extra, callback=callback,
                                sigmas=sigmas)
        return sampler.func(sampler.model_wrap_cfg, x, extra_args=extra, callback=callback,
                            timesteps=a1.ddim_timesteps(STEPS))

    def sample(x):
        with torch.no_grad():
            return sampler.launch(p, x, STEPS, STEPS, conditioning, unconditioning, run)

    p.sampler = sampler
    out = a1.process_images(p, noise, sample, None if hires is None else (lambda x: hires(p, sampler, sample, x)))
    if kind == "euler":
        out = out * schedule.scale_out
    return out, p, runner


def reference(models, kind, noise, cond, uncond, cfg, methods):
    _, twin, alphas = models
    router, posts = Router(), []
    for method, post in methods:
        router = router.with_method(method)
        posts.append(post)
    host = SigmaHost(twin, router)
    with torch.no_grad():
        return host.sample(noise, a1111_schedule(kind, alphas), Cond(cond), Cond(uncond), cfg, posts)




def refused(p, runner):
    """The message of the one method the scripts refused, as the infotext carries it in place of that method's
    settings (script.refuse); A1111 itself saw no exception, so nothing else would tell an API client."""
    assert not runner.errors, runner.errors
    errors = {k: v for k, v in p.extra_generation_params.items() if k.startswith("AttnGuide ") and k.endswith(" error")}
    (key, message), = errors.items()
    method = key[:-len("error")]
    assert [k for k in p.extra_generation_params if k.startswith(method)] == [key]
    return message
