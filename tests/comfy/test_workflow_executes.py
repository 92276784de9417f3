"""A prompt through ComfyUI's own executor (inference mode, V3 class locking, caching):
UNETLoader -> AttnGuideSAG -> AttnGuidePAG -> KSampler, on a tiny checkpoint saved to disk.
The executed latent equals sampling the same loaded model with the nodes applied directly."""
import asyncio
from pathlib import Path

import pytest
import torch

import comfy_host as H

ROOT = Path(__file__).resolve().parents[2]
CAPTURED = {}


class _Cond:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0}), "empty": ("BOOLEAN", {"default": False})}}
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"

    def make(self, seed, empty):
        g = torch.Generator().manual_seed(seed)
        t = torch.zeros(1, 77, 32) if empty else torch.randn(1, 77, 32, generator=g)
        return ([[t, {}]],)


class _Keep:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}, "optional": {"key": ("STRING", {"default": "latent"})}}
    RETURN_TYPES = ()
    FUNCTION = "keep"
    OUTPUT_NODE = True

    def keep(self, samples, key="latent"):
        CAPTURED[key] = samples["samples"].clone()
        return {"ui": {"shape": [list(samples["samples"].shape)]}}


@pytest.fixture(scope="module")
def checkpoint(comfy, tmp_path_factory):
    with H.tiny_unet_file(tmp_path_factory.mktemp("diffusion_models")) as path:
        yield path


def _execute(prompt, prompt_id):
    """Load the pack (and the custom-sampler nodes ComfyUI loads at start-up), validate and run."""
    import execution
    import nodes
    assert asyncio.run(nodes.load_custom_node(str(ROOT)))
    if "SamplerCustomAdvanced" not in nodes.NODE_CLASS_MAPPINGS:
        asyncio.run(nodes.load_custom_node(str(Path(nodes.__file__).parent / "comfy_extras" / "nodes_custom_sampler.py")))
    nodes.NODE_CLASS_MAPPINGS.update({"AttnGuideTestCond": _Cond, "AttnGuideTestKeep": _Keep})
    valid, err, outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    assert valid, (err, node_errors)
    executor = H.prompt_executor()
    executor.execute(prompt, prompt_id, extra_data={}, execute_outputs=outputs)
    assert executor.success, executor.status_messages


def _prompt(name):
    sampler = {"seed": 0, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}},
        "2": {"class_type": "AttnGuideSAG", "inputs": {"model": ["1", 0], "scale": 0.75, "blur_sigma": 1.0, "threshold": 1.0,
                                                       "layer": "m0.0", "start_percent": 0.0, "end_percent": 1.0}},
        "3": {"class_type": "AttnGuidePAG", "inputs": {"model": ["2", 0], "scale": 3.0, "adaptive_scale": 0.0, "layers": "m0",
                                                       "rescale": 0.0, "start_percent": 0.0, "end_percent": 1.0}},
        "4": {"class_type": "AttnGuideTestCond", "inputs": {"seed": 1, "empty": False}},
        "5": {"class_type": "AttnGuideTestCond", "inputs": {"seed": 1, "empty": True}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 96, "batch_size": 2}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["3", 0], "positive": ["4", 0], "negative": ["5", 0],
                                                   "latent_image": ["6", 0], **sampler}},
        "8": {"class_type": "AttnGuideTestKeep", "inputs": {"samples": ["7", 0]}},
    }


def test_prompt_executes_and_equals_direct_sampling(checkpoint):
    import comfy.sample
    import comfy.sd
    from attnguide.nodes.pag import PerturbedAttentionGuidance
    from attnguide.nodes.sag import SelfAttentionGuidance

    _execute(_prompt(checkpoint.name), "p1")
    executed = CAPTURED["latent"]

    model = comfy.sd.load_diffusion_model(str(checkpoint))
    before = repr(model.model_options)
    patched = PerturbedAttentionGuidance.execute(
        SelfAttentionGuidance.execute(model, scale=0.75, blur_sigma=1.0, threshold=1.0, layer="m0.0", start_percent=0.0, end_percent=1.0).args[0], scale=3.0, adaptive_scale=0.0, layers="m0", rescale=0.0, start_percent=0.0, end_percent=1.0).args[0]
    pos, neg = _Cond().make(1, False)[0], _Cond().make(1, True)[0]
    latent = torch.zeros(2, 4, 12, 16)
    direct = comfy.sample.sample(patched, comfy.sample.prepare_noise(latent, 0), 3, 5.0, "euler", "normal", pos, neg, latent,
                                 denoise=1.0, disable_pbar=True, seed=0)
    plain = comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 0), 3, 5.0, "euler", "normal", pos, neg, latent,
                                denoise=1.0, disable_pbar=True, seed=0)
    assert executed.shape == (2, 4, 12, 16)
    assert float((executed - direct).abs().max() / direct.abs().max()) <= 1e-5
    assert float((plain - direct).abs().max() / direct.abs().max()) >= 1e-3
    assert repr(model.model_options) == before


def _sega_prompt(name):
    concept = {"prompt": "", "scale": 10.0, "warmup": 0, "cooldown": -1, "timing": "steps", "threshold": 0.5, "weight": 1.0}
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}},
        "2": {"class_type": "AttnGuideTestCond", "inputs": {"seed": 2, "empty": False}},
        "3": {"class_type": "AttnGuideTestCond", "inputs": {"seed": 3, "empty": False}},
        "4": {"class_type": "AttnGuideSEGAConcept", "inputs": {**concept, "direction": "add", "conditioning": ["2", 0]}},
        "5": {"class_type": "AttnGuideSEGAConcept", "inputs": {**concept, "direction": "remove", "conditioning": ["3", 0],
                                                               "concepts": ["4", 0]}},
        "6": {"class_type": "AttnGuideSEGA", "inputs": {"model": ["1", 0], "concepts": ["5", 0], "momentum_scale": 0.1,
                                                        "momentum_beta": 0.4}},
        "7": {"class_type": "AttnGuideTestCond", "inputs": {"seed": 1, "empty": False}},
        "8": {"class_type": "AttnGuideTestCond", "inputs": {"seed": 1, "empty": True}},
        "9": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 96, "batch_size": 1}},
        "10": {"class_type": "KSampler", "inputs": {"model": ["6", 0], "positive": ["7", 0], "negative": ["8", 0],
                                                    "latent_image": ["9", 0], "seed": 0, "steps": 3, "cfg": 5.0,
                                                    "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "11": {"class_type": "AttnGuideTestKeep", "inputs": {"samples": ["10", 0], "key": "ksampler"}},
        "12": {"class_type": "AttnGuideSEGAGuider", "inputs": {"model": ["1", 0], "positive": ["7", 0], "negative": ["8", 0],
                                                               "concepts": ["5", 0], "cfg": 5.0, "momentum_scale": 0.1,
                                                               "momentum_beta": 0.4}},
        "13": {"class_type": "RandomNoise", "inputs": {"noise_seed": 0}},
        "14": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "15": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "normal", "steps": 3, "denoise": 1.0}},
        "16": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["13", 0], "guider": ["12", 0], "sampler": ["14", 0],
                                                                 "sigmas": ["15", 0], "latent_image": ["9", 0]}},
        "17": {"class_type": "AttnGuideTestKeep", "inputs": {"samples": ["16", 0], "key": "guider"}},
        "18": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["7", 0], "negative": ["8", 0],
                                                    "latent_image": ["9", 0], "seed": 0, "steps": 3, "cfg": 5.0,
                                                    "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "19": {"class_type": "AttnGuideTestKeep", "inputs": {"samples": ["18", 0], "key": "plain"}},
    }


def test_sega_prompt_with_ksampler_and_sampler_custom_advanced(checkpoint):
    """Concept stack -> AttnGuideSEGA -> KSampler, and the same concepts -> AttnGuideSEGAGuider ->
    SamplerCustomAdvanced, in one prompt: both run and agree, and SEGA moved the result."""
    _execute(_sega_prompt(checkpoint.name), "p2")
    ksampler, guider, plain = CAPTURED["ksampler"], CAPTURED["guider"], CAPTURED["plain"]
    assert float((ksampler - guider).abs().max() / guider.abs().max()) <= 1e-6
    assert float((plain - guider).abs().max() / guider.abs().max()) >= 1e-3
