"""A panorama prompt through ComfyUI's own executor: UNETLoader -> AttnGuidePanorama -> AttnGuidePAG
-> KSampler with a region prompt (AttnGuidePanoramaRegion) as positive. The executed latent equals
sampling the same loaded model with the nodes applied directly."""
import torch

from test_workflow_executes import CAPTURED, _Cond, _execute, checkpoint  # noqa: F401  (fixture)


class _Mask:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 320}), "height": ("INT", {"default": 128})}}
    RETURN_TYPES = ("MASK",)
    FUNCTION = "make"

    def make(self, width, height):
        return (region_mask(width, height),)


def region_mask(width, height):
    mask = torch.zeros(1, height, width)
    mask[:, :, width // 2:] = 1.0
    return mask


def _prompt(name):
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}},
        "2": {"class_type": "AttnGuidePanorama", "inputs": {"model": ["1", 0], "window_width": 128, "window_height": 128,
                                                            "stride": 64, "wrap": "horizontal", "weights": "feathered",
                                                            "window_batch": 4}},
        "3": {"class_type": "AttnGuidePAG", "inputs": {"model": ["2", 0], "scale": 3.0, "adaptive_scale": 0.0, "layers": "m0",
                                                       "rescale": 0.0, "start_percent": 0.0, "end_percent": 1.0}},
        "4": {"class_type": "AttnGuideTestCond", "inputs": {"seed": 1, "empty": False}},
        "5": {"class_type": "AttnGuideTestCond", "inputs": {"seed": 1, "empty": True}},
        "6": {"class_type": "AttnGuideTestCond", "inputs": {"seed": 2, "empty": False}},
        "7": {"class_type": "AttnGuideTestMask", "inputs": {"width": 320, "height": 128}},
        "8": {"class_type": "AttnGuidePanoramaRegion", "inputs": {"conditioning": ["4", 0], "region": ["6", 0],
                                                                  "mask": ["7", 0], "strength": 1.0, "bootstrap": 0.4}},
        "9": {"class_type": "EmptyLatentImage", "inputs": {"width": 320, "height": 128, "batch_size": 1}},
        "10": {"class_type": "KSampler", "inputs": {"model": ["3", 0], "positive": ["8", 0], "negative": ["5", 0],
                                                    "latent_image": ["9", 0], "seed": 3, "steps": 3, "cfg": 5.0,
                                                    "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "11": {"class_type": "AttnGuideTestKeep", "inputs": {"samples": ["10", 0]}},
    }


def test_panorama_prompt_executes_and_equals_direct_sampling(checkpoint):  # noqa: F811
    import comfy.sample
    import comfy.sd
    import nodes
    from attnguide.nodes.pag import PerturbedAttentionGuidance
    from attnguide.nodes.panorama import Panorama
    from attnguide.nodes.panorama_region import PanoramaRegion

    nodes.NODE_CLASS_MAPPINGS["AttnGuideTestMask"] = _Mask
    _execute(_prompt(checkpoint.name), "panorama")
    executed = CAPTURED["latent"]

    model = comfy.sd.load_diffusion_model(str(checkpoint))
    patched = PerturbedAttentionGuidance.execute(
        Panorama.execute(model, window_width=128, window_height=128, stride=64, wrap="horizontal", weights="feathered", window_batch=4).args[0], scale=3.0, adaptive_scale=0.0, layers="m0", rescale=0.0, start_percent=0.0, end_percent=1.0).args[0]
    pos = PanoramaRegion.execute(_Cond().make(1, False)[0], _Cond().make(2, False)[0], region_mask(320, 128),
                                 1.0, 0.4).args[0]
    neg = _Cond().make(1, True)[0]
    latent = torch.zeros(1, 4, 16, 40)
    direct = comfy.sample.sample(patched, comfy.sample.prepare_noise(latent, 3), 3, 5.0, "euler", "normal", pos, neg,
                                 latent, denoise=1.0, disable_pbar=True, seed=3)
    assert executed.shape == (1, 4, 16, 40)
    assert float((executed - direct).abs().max() / direct.abs().max()) <= 1e-5
