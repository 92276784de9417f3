"""Pix2Pix-Zero (Parmar et al. 2023, "Zero-shot Image-to-Image Translation"): its parameters, as
diffusers' StableDiffusionPix2PixZeroPipeline names them. In ComfyUI they are the inputs of three nodes:
Direction (source, target), Inversion (the lambda_*, regularization_steps, auto_corr_rolls, seed) and
Edit (guidance_amount); the WebUI shows them in one section, img2img only (the caption is the img2img prompt)."""
from ..attention.cross_maps import attention_from_probs, cross_attention_probs
from ..guidance.pix2pix_zero import InversionSettings, map_loss
from .spec import MethodSpec, Param

SPEC = MethodSpec(
    "pix2pix_zero", "Pix2Pix-Zero (AttnGuide)", "P2PZ", "AttnGuidePix2PixZeroEdit", img2img=True, hires="skip",
    params=(
        Param("source", "text", "cat", "Source", multiline=True,
              tooltip="What the image shows now: sentences about it, one per line (e.g. 'a cat "
                      "sitting on a sofa.'), or one word ('cat'), expanded with 16 built-in sentence "
                      "templates. A single line that ends with '.', '!' or '?' is one sentence.",
              webui_tooltip="What the image shows now: sentences about it, one per line (e.g. 'a cat "
                            "sitting on a sofa.'), or one word ('cat'), expanded with 16 built-in "
                            "sentence templates. The img2img prompt is the image's caption; the edit "
                            "adds target - source to it."),
        Param("target", "text", "dog", "Target", multiline=True,
              tooltip="What it should show: the same kind of sentences with the new concept ('dog')."),
        Param("guidance_amount", "float", 0.1, "Guidance amount", minimum=0.0, maximum=1000.0, step=0.01,
              tooltip="Cross-attention guidance: step size of the one gradient step per denoising "
                      "step that pulls the edit's cross-attention maps towards the source's "
                      "(reference 0.1). 0 = the direction alone."),
        Param("lambda_auto_corr", "float", 20.0, "Inversion lambda auto-correlation", minimum=0.0, maximum=1000.0, step=0.5,
              tooltip="Weight of the auto-correlation penalty that keeps the inverted noise spatially"
                      " uncorrelated (reference 20; 0 = off)."),
        Param("lambda_kl", "float", 20.0, "Inversion lambda KL", minimum=0.0, maximum=1000.0, step=0.5,
              tooltip="Weight of the KL penalty that keeps the noise's mean 0 and variance 1 "
                      "(reference 20; 0 = off)."),
        Param("regularization_steps", "int", 5, "Inversion regularisation steps", minimum=0, maximum=100,
              tooltip="Regularisation rounds per inversion step (reference 5; 0 = plain DDIM "
                      "inversion)."),
        Param("auto_corr_rolls", "int", 5, "Inversion auto-correlation rolls", minimum=1, maximum=100,
              tooltip="Random shifts per round of the auto-correlation penalty (reference 5)."),
        Param("seed", "int", 0, "Inversion seed", minimum=0, maximum=0xffffffffffffffff,
              tooltip="Seed of the random shifts of the auto-correlation penalty (image i uses seed +"
                      " i)."),
    ))

def inversion_settings(lambda_auto_corr, lambda_kl, regularization_steps, auto_corr_rolls):
    """The inversion's regularisation from its params (the Inversion node's, the WebUI section's)."""
    return InversionSettings(float(lambda_auto_corr), float(lambda_kl), int(regularization_steps), int(auto_corr_rolls))


# What every host installs, for hosts that call post-CFG functions with ComfyUI's arguments (ComfyUI,
# Forge, reForge). The adapter gives what differs: run_extra(args, conds, x) -> predictions of an extra
# model call; timestep(args) -> the model's timestep at args["sigma"].


def recording(maps, key, seen=None):
    """attn2 replace: the layer's attention, its probabilities recorded in `maps`
    (attention.cross_maps.ReferenceMaps) under `key`, then shown to seen(probs)."""
    def attend(q, k, v, extra_options):
        probs = cross_attention_probs(q, k, extra_options["n_heads"])
        maps.record(key, probs)
        if seen is not None:
            seen(probs)
        return attention_from_probs(probs, v, extra_options["n_heads"])
    return attend


def comparing(maps, key, halves, loss):
    """attn2 replace: the layer's attention, its map loss against the next recorded map of `key`
    added to loss["value"] (halves: guided CFG halves, see map_loss)."""
    def attend(q, k, v, extra_options):
        probs = cross_attention_probs(q, k, extra_options["n_heads"])
        term = map_loss(probs, maps.next(key), halves)
        loss["value"] = term if "value" not in loss else loss["value"] + term
        return attention_from_probs(probs, v, extra_options["n_heads"])
    return attend
