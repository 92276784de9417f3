"""Pix2Pix-Zero: cross-attention map storage, per-step cost and peak memory of attnguide's
edit in ComfyUI beside diffusers' StableDiffusionPix2PixZeroPipeline, on the same weights,
interleaved in one run.

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_pix2pix_zero.py [--size tiny|sd15] [--res 512] [--steps N] [--repeats R]

Run it with the Python of that ComfyUI's environment, with diffusers and pytest installed
(the model builders come from tests/). One random UNet is built with diffusers and loaded
into a ComfyUI SD1.5 model with ComfyUI's own key map. Every configuration edits the same
noise latent with the same prompt embeddings and direction (CFG 7.5, guidance amount 0.1,
DDIM = ComfyUI's Euler on DDIM's sigmas, --steps steps):

    ComfyUI plain CFG | ours (maps held in float16, the node's default) | ours, float32 maps
    diffusers plain   | reference (StableDiffusionPix2PixZeroPipeline edit call)

Map storage: the most bytes of reference cross-attention maps held at once during one edit:
ours counts ReferenceMaps (one step, both CFG halves); the reference's count is the sum of
its attention processors' stored maps (every step of the reference pass, before the edit
pass pops them). Target: ours <= 1/4 of the reference's. The time per step and the peak
memory (bench_step.py's Memory: CUDA max_memory_allocated growth, CPU peak RSS growth)
are medians over rounds; UNet forwards per step are counted by a forward pre-hook.
Exit 0 when the storage target is met, 1 when not, 2 when ComfyUI cannot be set up.

Sizes: tiny = tests' tiny SD1 UNet at a 16x16 latent; sd15 = SD1.5's UNet config (860 M
parameters, random weights), fp32, --res px (default 512, 64x64 latent). On 2 CPU cores one
sd15-512 edit step takes minutes; --res 256 is about 4x cheaper.
"""
import argparse
import functools
import sys

import bench_step as B
from interleave import ForwardCounter, HostRuns, add_host_options, rel, sd15_pair


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench/bench_pix2pix_zero.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=["tiny", "sd15"], default="tiny")
    p.add_argument("--res", type=int, default=512, help="image size in px for --size sd15 (multiple of 64)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps per call (default 10 tiny, 3 sd15)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5 tiny, 1 sd15)")
    add_host_options(p)
    a = p.parse_args(argv)
    a.steps = a.steps or (10 if a.size == "tiny" else 3)
    a.repeats = a.repeats or (5 if a.size == "tiny" else 1)
    return a


def build_pair(a, D):
    if a.size == "tiny":
        return (*D.tiny_sd1_pair(), 16, 32)
    return (*sd15_pair(D, a.res, B.SD15_UNET), a.res // 8, 768)


class ReferenceStorage:
    """Most bytes held at once in the reference's Pix2PixZeroAttnProcessor map stores."""

    def __init__(self, module):
        self.processors, self.held, self.now = [], 0, 0
        original = module.Pix2PixZeroAttnProcessor.__call__
        storage = self

        @functools.wraps(original)  # diffusers passes only the kwargs the processor's signature names
        def call(proc, *args, **kwargs):
            before = storage._bytes(proc)
            out = original(proc, *args, **kwargs)
            storage.now += storage._bytes(proc) - before
            storage.held = max(storage.held, storage.now)
            return out

        module.Pix2PixZeroAttnProcessor.__call__ = call

    @staticmethod
    def _bytes(proc):
        maps = getattr(proc, "reference_cross_attn_map", None) or {}
        return sum(m.numel() * m.element_size() for m in maps.values())

    def reset(self):
        self.held = self.now = 0


def main(argv=None):
    a = parse_args(argv)
    _, device = B.setup_comfy(a)
    import torch
    sys.path.insert(0, str(B.TESTS / "support"))
    import diffusers_in_comfy as D
    D.import_diffusers()
    import comfy.samplers
    import diffusers
    from diffusers.pipelines.deprecated.stable_diffusion_variants import pipeline_stable_diffusion_pix2pix_zero as p2p_module

    from attnguide.guidance.pix2pix_zero import edit_direction
    from attnguide.comfyui.pix2pix_zero import EditDirection
    from attnguide.comfyui.pix2pix_zero_edit import edit_latent
    from tiny_diffusers import pix2pix_zero_pipeline

    unet, model, latent, ctx = build_pair(a, D)
    unet.to(device)
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, latent, latent, generator=g)
    cond, uncond = torch.randn(1, 77, ctx, generator=g), torch.randn(1, 77, ctx, generator=g)
    source, target = torch.randn(4, 77, ctx, generator=g), torch.randn(4, 77, ctx, generator=g)
    direction = EditDirection(edit_direction(source, target), "bench")
    schedule = D.ddim_schedule(a.steps)
    samples = model.model.latent_format.process_out(latents / schedule.abar[0] ** 0.5)

    p2p = pix2pix_zero_pipeline(unet).to(device)
    sd = diffusers.StableDiffusionPipeline(vae=p2p.vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=p2p.scheduler,
                                           feature_extractor=None, safety_checker=None, requires_safety_checker=False,
                                           image_encoder=None)
    sd.set_progress_bar_config(disable=True)
    storage = ReferenceStorage(p2p_module)
    common = dict(latents=latents.to(device), prompt_embeds=cond.to(device), negative_prompt_embeds=uncond.to(device),
                  num_inference_steps=a.steps, guidance_scale=7.5, height=8 * latent, width=8 * latent,
                  output_type="latent")
    held = {}

    def ours(dtype, name):
        def run():
            with torch.inference_mode():
                edited, _, editor = edit_latent(model, [[cond, {}]], [[uncond, {}]], direction, samples,
                                                comfy.samplers.sampler_object("euler"), schedule.sigmas, 7.5, 0.1,
                                                map_dtype=dtype)
            held[name] = editor.held
            return model.model.latent_format.process_in(edited) * schedule.abar[-1] ** 0.5
        return run

    def reference():
        storage.reset()
        with torch.no_grad():
            out = p2p(**common, source_embeds=source.to(device), target_embeds=target.to(device),
                      cross_attention_guidance_amount=0.1).images.cpu()
        held["reference"] = storage.held
        return out

    def comfy_plain():
        with torch.inference_mode():
            return D.comfy_sample(model, latents, [[cond, {}]], [[uncond, {}]], 7.5, schedule).cpu()

    configs = {
        "ComfyUI plain CFG": ("comfy", comfy_plain),
        "ours (float16 maps)": ("comfy", ours(torch.float16, "ours (float16 maps)")),
        "ours (float32 maps)": ("comfy", ours(torch.float32, "ours (float32 maps)")),
        "diffusers plain CFG": ("diffusers", lambda: sd(**common).images.cpu()),
        "reference": ("diffusers", reference),
    }
    counters = {"comfy": ForwardCounter(model.model.diffusion_model), "diffusers": ForwardCounter(unet)}
    memory = B.Memory(device)
    runs = HostRuns(configs, counters, memory, a.steps, a.repeats)
    outs = runs.outs

    print(f"# Pix2Pix-Zero bench: size {a.size}" + (f" {a.res}px" if a.size == "sd15" else "") +
          f", latent {latent}x{latent}, {a.steps} steps x {a.repeats} rounds, device {device}, threads {a.threads}, "
          f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"ComfyUI {B.comfy_commit(B.os.environ['COMFYUI_PATH'])[:10]}, CPU {B.cpu_name()}, load {B.loadavg()}")
    print(f"# memory: {memory.what}")
    runs.print_table(B.fmt_bytes, ("maps held", lambda name: B.fmt_bytes(held[name]) if name in held else "-"))
    print(f"# ours vs reference (same weights): float32 maps {rel(outs['ours (float32 maps)'], outs['reference']):.1e}, "
          f"float16 maps {rel(outs['ours (float16 maps)'], outs['reference']):.1e}; the edit moved the result by "
          f"{rel(outs['reference'], outs['diffusers plain CFG']):.1e}")
    ref_bytes, ours_bytes = held["reference"], held["ours (float16 maps)"]
    per_step_fp32 = held["ours (float32 maps)"]
    scale512 = (64 / latent) ** 2
    print(f"# per step, both CFG halves, float32: {B.fmt_bytes(per_step_fp32)}; at 512 px (64x64 latent) that is "
          f"{B.fmt_bytes(per_step_fp32 * scale512)}, so the reference holds {B.fmt_bytes(per_step_fp32 * scale512 * 50)} "
          f"over 50 steps and ours {B.fmt_bytes(per_step_fp32 * scale512 / 2)} (float16, one step)"
          + (" [extrapolated from the tiny UNet's layout]" if a.size == "tiny" else ""))
    ratio = ours_bytes / ref_bytes
    ok = ratio <= 0.25
    print(f"{'PASS' if ok else 'FAIL'} map storage: ours {B.fmt_bytes(ours_bytes)} / reference {B.fmt_bytes(ref_bytes)} "
          f"= {ratio:.4f} (target <= 0.25; = 1 / (2 x steps))")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
