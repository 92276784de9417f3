"""Pix2Pix-Zero through ComfyUI's own executor (inference mode, the model loaded by the
host's model management, whose weights are then inference tensors): UNETLoader, a direction
loaded from a .safetensors file, BasicScheduler + KSamplerSelect -> Inversion -> Edit.
Equals calling the same steps directly on the loaded model; the guidance moved the edit."""
import asyncio
from pathlib import Path

import pytest
import torch

import comfy_host as H
from test_workflow_executes import CAPTURED, ROOT, _Cond, _Keep, checkpoint  # noqa: F401  (fixture)


class _Latent:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0})}}
    RETURN_TYPES = ("LATENT",)
    FUNCTION = "make"

    def make(self, seed):
        return ({"samples": torch.randn(2, 4, 12, 16, generator=torch.Generator().manual_seed(seed))},)


def _prompt(name, amount):
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}},
        "2": {"class_type": "AttnGuideTestCond", "inputs": {"seed": 1, "empty": False}},
        "3": {"class_type": "AttnGuideTestCond", "inputs": {"seed": 1, "empty": True}},
        "4": {"class_type": "AttnGuideTestLatent", "inputs": {"seed": 4}},
        "5": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "ddim_uniform", "steps": 3,
                                                         "denoise": 1.0}},
        "6": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "ddim"}},
        "7": {"class_type": "AttnGuidePix2PixZeroLoadDirection", "inputs": {"direction_file": "test_direction.safetensors"}},
        "8": {"class_type": "AttnGuidePix2PixZeroInvert", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "latent": ["4", 0], "sigmas": ["5", 0], "seed": 3,
            "lambda_auto_corr": 20.0, "lambda_kl": 20.0, "regularization_steps": 5, "auto_corr_rolls": 5}},
        "9": {"class_type": "AttnGuidePix2PixZeroEdit", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "direction": ["7", 0], "latent": ["8", 0],
            "sampler": ["6", 0], "sigmas": ["5", 0], "cfg": 5.0, "guidance_amount": amount, "add_noise": "disable",
            "noise_seed": 0}},
        "10": {"class_type": "AttnGuideTestKeep", "inputs": {"samples": ["8", 0], "key": "noise"}},
        "11": {"class_type": "AttnGuideTestKeep", "inputs": {"samples": ["9", 0], "key": "edited"}},
        "12": {"class_type": "AttnGuideTestKeep", "inputs": {"samples": ["9", 1], "key": "reference"}},
    }


@pytest.fixture(scope="module")
def direction_file(checkpoint, tmp_path_factory):  # noqa: F811
    import folder_paths
    from attnguide.guidance.pix2pix_zero import edit_direction
    from attnguide.comfyui import pix2pix_zero as node
    folder = tmp_path_factory.mktemp("directions")
    g = torch.Generator().manual_seed(9)
    made = node.EditDirection(edit_direction(torch.randn(3, 77, 32, generator=g), torch.randn(2, 77, 32, generator=g)),
                              "SD1ClipModel", "cat", "dog")
    node.save_direction(made, str(folder / "test_direction.safetensors"))
    node.folders()
    folder_paths.add_model_folder_path(node.FOLDER, str(folder))
    return made


def _execute(executor, prompt, pid):
    import execution
    valid, err, outputs, node_errors = asyncio.run(execution.validate_prompt(pid, prompt, None))
    assert valid, (err, node_errors)
    executor.execute(prompt, pid, extra_data={}, execute_outputs=outputs)
    assert executor.success, executor.status_messages
    return {k: CAPTURED[k].clone() for k in ("noise", "edited", "reference")}


def test_invert_and_edit_prompt_equals_direct_calls(checkpoint, direction_file):  # noqa: F811
    import comfy.samplers
    import comfy.sd
    import nodes
    from attnguide.guidance.pix2pix_zero import InversionSettings
    from attnguide.comfyui.pix2pix_zero_edit import edit_latent
    from attnguide.comfyui.pix2pix_zero_invert import invert_latent

    assert asyncio.run(nodes.load_custom_node(str(ROOT)))
    if "BasicScheduler" not in nodes.NODE_CLASS_MAPPINGS:
        asyncio.run(nodes.load_custom_node(str(Path(nodes.__file__).parent / "comfy_extras" / "nodes_custom_sampler.py")))
    nodes.NODE_CLASS_MAPPINGS.update({"AttnGuideTestCond": _Cond, "AttnGuideTestKeep": _Keep,
                                      "AttnGuideTestLatent": _Latent})
    executor = H.prompt_executor()
    guided = _execute(executor, _prompt(checkpoint.name, 20.0), "p2pz1")
    unguided = _execute(executor, _prompt(checkpoint.name, 0.0), "p2pz2")

    model = comfy.sd.load_diffusion_model(str(checkpoint))
    before = repr(model.model_options)
    pos, neg = _Cond().make(1, False)[0], _Cond().make(1, True)[0]
    latent = _Latent().make(4)[0]["samples"]
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "ddim_uniform", 3)
    with torch.inference_mode():
        noise = invert_latent(model, pos, latent, sigmas, InversionSettings(), 3)
        edited, reference, _ = edit_latent(model, pos, neg, direction_file, noise, comfy.samplers.sampler_object("ddim"),
                                           sigmas, 5.0, 20.0)
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max())
    assert guided["edited"].shape == (2, 4, 12, 16)
    assert rel(guided["noise"], noise) <= 1e-5
    assert rel(guided["edited"], edited) <= 1e-5 and rel(guided["reference"], reference) <= 1e-5
    assert rel(unguided["edited"], guided["edited"]) >= 1e-3, "cross-attention guidance did not move the edit"
    assert torch.equal(unguided["reference"], guided["reference"])
    assert repr(model.model_options) == before
