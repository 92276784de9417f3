"""Make a tiny random-weight SD1.x checkpoint that Forge's loader takes as SD1.5 (no downloads).

Forge (backend/loader.py) picks the model family with huggingface_guess, which for SD1.5 requires
context_dim 768 and model_channels 320, and builds the text encoder and the VAE from the configs of
its own backend/huggingface/runwayml/stable-diffusion-v1-5 folder (CLIP-L, SD's VAE): those two are
full size here, with random weights. The UNet is small: three levels of 320 channels
(channel_mult [1, 1, 1]), one res block per level, a transformer (depth 1) on every level and in the
middle block, so SD1's layer kinds are all there (input blocks 1, 3, 5, middle 0, output 0-5: the
pack's d1, d3, d5, m0, u0-u5; cross-attention at downscales 1, 2 and 4). Weights are random (seeded); every Linear/Conv gets torch's default init.

Run it from the Forge folder with Forge's venv (it imports Forge's own model classes):
  python make_tiny_forge_model.py --webui <forge> --out <models/Stable-diffusion/tiny.safetensors>
It then loads the file back with Forge's loader and fails if any weight is missing or left over.
"""
import argparse
import os
import sys

UNET = dict(in_channels=4, model_channels=320, out_channels=4, num_res_blocks=[1, 1, 1], channel_mult=[1, 1, 1],
            num_heads=8, num_head_channels=-1, use_spatial_transformer=True, transformer_depth=[1, 1, 1],
            transformer_depth_middle=1, transformer_depth_output=[1, 1, 1, 1, 1, 1], context_dim=768,
            use_linear_in_transformer=False, adm_in_channels=None, use_checkpoint=False)
REPO = os.path.join("backend", "huggingface", "runwayml", "stable-diffusion-v1-5")


def reinit(module, seed):
    import torch
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            m.reset_parameters()
    return module


def forge_state_dict(webui):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel
    from backend.nn.clip import IntegratedCLIP
    from backend.nn.unet import IntegratedUNet2DConditionModel
    from backend.nn.vae import IntegratedAutoencoderKL
    unet = reinit(IntegratedUNet2DConditionModel(**UNET), 1)
    vae = reinit(IntegratedAutoencoderKL.from_config(IntegratedAutoencoderKL.load_config(os.path.join(webui, REPO, "vae"))), 2)
    torch.manual_seed(3)
    clip = IntegratedCLIP(CLIPTextModel, CLIPTextConfig.from_pretrained(os.path.join(webui, REPO, "text_encoder")))
    sd = {}
    for prefix, model in (("model.diffusion_model.", unet), ("first_stage_model.", vae), ("cond_stage_model.", clip)):
        for k, v in model.state_dict().items():
            if k.endswith("position_ids") or k == "logit_scale":
                continue
            sd[prefix + k] = v.detach().to(torch.float16).contiguous()
    return sd


def check(path):
    """Forge's own loader must take it as SD1.5 and every weight (it only prints what it misses).
    Outside the WebUI the loader stops at the text engine, which reads the WebUI's options; the
    components are loaded by then."""
    import contextlib
    import io
    import huggingface_guess
    from backend.loader import forge_loader
    from backend.utils import load_torch_file
    guess = type(huggingface_guess.guess(load_torch_file(path))).__name__
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            forge_loader(path)
        except AttributeError as e:  # modules.shared.opts is None outside the WebUI
            if "emphasis" not in str(e):
                raise
    text = out.getvalue()
    print(text)
    bad = [line[:200] for line in text.splitlines() if "Missing:" in line or "Unexpected:" in line or "Skipped" in line]
    if bad or guess != "SD15":
        sys.exit(f"make_tiny_forge_model: Forge does not load it as SD1.5 cleanly: {guess} {bad}")
    print("make_tiny_forge_model: Forge's loader takes it as", guess)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--webui", required=True)
    ap.add_argument("--flavor", default="forge")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    webui = os.path.abspath(a.webui)
    if a.flavor != "forge":
        sys.exit("make_tiny_forge_model: only Forge's classes are used; build the checkpoint with a Forge checkout")
    sys.path[:0] = [webui, os.path.join(webui, "packages_3rdparty"), os.path.join(webui, "repositories", "huggingface_guess")]
    sys.argv = [sys.argv[0], "--always-cpu"]  # backend/args.py parses sys.argv on import
    from safetensors.torch import save_file
    if os.path.exists(a.out) and os.path.getmtime(a.out) > os.path.getmtime(__file__):
        return check(a.out)
    sd = forge_state_dict(webui)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    save_file(sd, a.out)
    print(f"make_tiny_forge_model: {len(sd)} tensors, {sum(v.numel() for v in sd.values()) / 1e6:.1f}M parameters -> {a.out}")
    check(a.out)


if __name__ == "__main__":
    main()
