"""Attend-and-Excite through ComfyUI's own executor (inference mode, the model loaded by
the host's model management): UNETLoader -> AttnGuideAttendAndExcite -> KSampler, and the
maps node after the sampler. Equals sampling the loaded model with the node applied directly;
a second prompt on the already loaded model gives the same latent."""
import asyncio

import torch

import comfy_host as H
from test_workflow_executes import CAPTURED, ROOT, _Cond, _Keep, checkpoint  # noqa: F401  (fixture)


class _KeepImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}
    RETURN_TYPES = ()
    FUNCTION = "keep"
    OUTPUT_NODE = True

    def keep(self, images):
        CAPTURED["maps"] = images.clone()
        return {"ui": {"shape": [list(images.shape)]}}


EXCITE = {"prompt": "", "words": "", "max_excite_steps": "2", "thresholds": "0: 0.05", "scale_factor": 20.0,
          "scale_range_start": 1.0, "scale_range_end": 0.5, "max_refinement_iterations": 20, "smoothing_sigma": 0.5,
          "attention_downscale": 1, "token_indices": "2, 5"}


def _prompt(name, seed=0):
    sampler = {"seed": seed, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}},
        "2": {"class_type": "AttnGuideAttendAndExcite", "inputs": {"model": ["1", 0], **EXCITE}},
        "4": {"class_type": "AttnGuideTestCond", "inputs": {"seed": 1, "empty": False}},
        "5": {"class_type": "AttnGuideTestCond", "inputs": {"seed": 1, "empty": True}},
        "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 96, "batch_size": 2}},
        "7": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["4", 0], "negative": ["5", 0],
                                                   "latent_image": ["6", 0], **sampler}},
        "8": {"class_type": "AttnGuideTestKeep", "inputs": {"samples": ["7", 0]}},
        "9": {"class_type": "AttnGuideAttendAndExciteMaps", "inputs": {"model": ["2", 0], "samples": ["7", 0], "scale": 2}},
        "10": {"class_type": "AttnGuideTestKeepImage", "inputs": {"images": ["9", 0]}},
    }


def _execute(executor, prompt, pid):
    import execution
    valid, err, outputs, node_errors = asyncio.run(execution.validate_prompt(pid, prompt, None))
    assert valid, (err, node_errors)
    executor.execute(prompt, pid, extra_data={}, execute_outputs=outputs)
    assert executor.success, executor.status_messages
    return CAPTURED["latent"], CAPTURED["maps"]


def test_prompt_executes_and_equals_direct_sampling(checkpoint):  # noqa: F811
    import comfy.sample
    import comfy.sd
    import nodes
    from attnguide.nodes.attend_excite import AttendAndExcite

    assert asyncio.run(nodes.load_custom_node(str(ROOT)))
    nodes.NODE_CLASS_MAPPINGS.update({"AttnGuideTestCond": _Cond, "AttnGuideTestKeep": _Keep,
                                      "AttnGuideTestKeepImage": _KeepImage})
    executor = H.prompt_executor()
    executed, maps = _execute(executor, _prompt(checkpoint.name), "ae1")
    again, _ = _execute(executor, _prompt(checkpoint.name, seed=0) | {"8": {"class_type": "AttnGuideTestKeep",
                                                                         "inputs": {"samples": ["7", 0]}}}, "ae2")

    model = comfy.sd.load_diffusion_model(str(checkpoint))
    before = repr(model.model_options)
    patched = AttendAndExcite.execute(model, **EXCITE).args[0]
    pos, neg = _Cond().make(1, False)[0], _Cond().make(1, True)[0]
    latent = torch.zeros(2, 4, 12, 16)
    with torch.inference_mode():
        direct = comfy.sample.sample(patched, comfy.sample.prepare_noise(latent, 0), 3, 5.0, "euler", "normal", pos, neg,
                                     latent, denoise=1.0, disable_pbar=True, seed=0)
        plain = comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 0), 3, 5.0, "euler", "normal", pos, neg,
                                    latent, denoise=1.0, disable_pbar=True, seed=0)
    assert executed.shape == (2, 4, 12, 16)
    assert float((executed - direct).abs().max() / direct.abs().max()) <= 1e-5
    assert float((plain - direct).abs().max() / direct.abs().max()) >= 1e-3
    assert torch.equal(again, executed)
    assert maps.shape == (4, 24, 32, 3)   # 2 images x 2 tokens, 12x16 maps x 2
    assert repr(model.model_options) == before
