"""Attend-and-Excite: per-step cost of attnguide's node in ComfyUI beside diffusers'
StableDiffusionAttendAndExcitePipeline, on the same weights, interleaved in one run.

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_attend_excite.py [--size tiny|sd15] [--res 512] [--steps N] [--repeats R]

Run it with the Python of that ComfyUI's environment, with diffusers and pytest installed
(the model builders come from tests/). One random UNet is built with diffusers and
loaded into a ComfyUI SD1.5 model with ComfyUI's own key map (tests/support/diffusers_in_comfy.py).
Six configurations sample the same noise and embeddings (CFG 7.5, DDIM = ComfyUI's Euler
on DDIM's sigmas, --steps steps, no iterative refinement so every step costs the same):

    ComfyUI plain CFG | ours, every step inside the window | ours, every step after it
    diffusers plain   | reference, inside                  | reference, after (max_iter_to_alter=0)

Per-step time = wall time of one sampling call / steps, median over rounds (interleaved
as in bench_step.py). Each is also given as a ratio to its own host's plain CFG. UNet calls:
forwards per step (and how many ran with gradients) counted by a forward pre-hook.
Memory: see bench_step.py's Memory (CUDA: max_memory_allocated growth; CPU: peak RSS
growth of the process over the call).

Two more configurations refine at step 0 with threshold 1.0 (20 refinement updates in
both). Targets: ours runs no more UNet forwards than the reference inside the window and
fewer after it and when refining,
and its peak memory inside the window is not above the reference's (5% allowance for
the CPU measure's noise). Exit 0 when met, 1 when not, 2 when ComfyUI cannot be set up.

Sizes: tiny = tests' tiny SD1 UNet at a 16x16 latent (attention maps 16x16, downscale 1);
sd15 = SD1.5's UNet config (860 M parameters, random weights), fp32, --res px (default 512:
64x64 latent, 16x16 maps at downscale 4, the reference's setting). On 2 CPU cores one sd15-512
step with A&E takes about a minute; --res 256 is 4x cheaper.
"""
import argparse
import sys

import bench_step as B
from interleave import ForwardCounter, HostRuns, add_host_options, rel, sd15_pair


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench/bench_attend_excite.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=["tiny", "sd15"], default="tiny")
    p.add_argument("--res", type=int, default=512, help="image size in px for --size sd15 (multiple of 64)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps per call (default 4 tiny, 2 sd15)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 7 tiny, 2 sd15)")
    add_host_options(p)
    p.add_argument("--skip-refinement", action="store_true",
                   help="leave out the two refining configurations (20 forward+backward pairs each)")
    a = p.parse_args(argv)
    a.steps = a.steps or (4 if a.size == "tiny" else 2)
    a.repeats = a.repeats or (7 if a.size == "tiny" else 2)
    return a


def build_pair(a, D):
    if a.size == "tiny":
        return (*D.tiny_sd1_pair(), 16, 1, 32)
    return (*sd15_pair(D, a.res, B.SD15_UNET), a.res // 8, 4, 768)


def main(argv=None):
    a = parse_args(argv)
    _, device = B.setup_comfy(a)
    import torch
    sys.path.insert(0, str(B.TESTS / "support"))
    import diffusers_in_comfy as D
    D.import_diffusers()
    import diffusers
    from attnguide.nodes.attend_excite import AttendAndExcite

    unet, model, latent, downscale, ctx = build_pair(a, D)
    unet.to(device)
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, latent, latent, generator=g)
    cond, uncond = torch.randn(1, 77, ctx, generator=g), torch.randn(1, 77, ctx, generator=g)
    schedule = D.ddim_schedule(a.steps)
    grid = (latent + downscale - 1) // downscale
    indices = [2, 5]

    def pipe(cls):
        p = cls(vae=None, text_encoder=None, tokenizer=None, unet=unet, scheduler=D.ddim_scheduler(),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        p.set_progress_bar_config(disable=True)
        return p

    sd, ae = pipe(diffusers.StableDiffusionPipeline), pipe(diffusers.StableDiffusionAttendAndExcitePipeline)
    common = dict(latents=latents.to(device), prompt_embeds=cond.to(device), negative_prompt_embeds=uncond.to(device),
                  num_inference_steps=a.steps, guidance_scale=7.5, height=8 * latent, width=8 * latent,
                  output_type="latent")

    def node(until, thresholds=""):
        return AttendAndExcite.execute(model, prompt="", words="", max_excite_steps=str(until), thresholds=thresholds,
                                       scale_factor=20.0, scale_range_start=1.0, scale_range_end=0.5,
                                       max_refinement_iterations=20, smoothing_sigma=0.5,
                                       attention_downscale=downscale, token_indices="2, 5").args[0]

    def comfy(m):
        with torch.inference_mode():
            return D.comfy_sample(m, latents, [[cond, {}]], [[uncond, {}]], 7.5, schedule).cpu()

    inside, after, refining = node(a.steps), node(0), node(a.steps, "0: 1.0")
    configs = {
        "ComfyUI plain CFG": ("comfy", lambda: comfy(model)),
        "ours, inside the window": ("comfy", lambda: comfy(inside)),
        "ours, after the window": ("comfy", lambda: comfy(after)),
        "diffusers plain CFG": ("diffusers", lambda: sd(**common).images.cpu()),
        "reference, inside": ("diffusers", lambda: ae(prompt=None, **common, token_indices=indices, thresholds={},
                                                      max_iter_to_alter=a.steps, attn_res=(grid, grid)).images.cpu()),
        "reference, after": ("diffusers", lambda: ae(prompt=None, **common, token_indices=indices, thresholds={},
                                                     max_iter_to_alter=0, attn_res=(grid, grid)).images.cpu()),
        "ours, refining at step 0": ("comfy", lambda: comfy(refining)),
        "reference, refining at step 0": ("diffusers", lambda: ae(prompt=None, **common, token_indices=indices,
                                                                  thresholds={0: 1.0}, max_iter_to_alter=a.steps,
                                                                  attn_res=(grid, grid)).images.cpu()),
    }
    if a.skip_refinement:
        del configs["ours, refining at step 0"], configs["reference, refining at step 0"]
    counters = {"comfy": ForwardCounter(model.model.diffusion_model), "diffusers": ForwardCounter(unet)}
    memory = B.Memory(device)
    runs = HostRuns(configs, counters, memory, a.steps, a.repeats)
    outs, calls, mem = runs.outs, runs.calls, runs.mem

    print(f"# Attend-and-Excite bench: size {a.size}" + (f" {a.res}px" if a.size == "sd15" else "") +
          f", latent {latent}x{latent}, maps {grid}x{grid}, {a.steps} steps x {a.repeats} rounds, device {device}, "
          f"threads {a.threads}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"ComfyUI {B.comfy_commit(B.os.environ['COMFYUI_PATH'])[:10]}, CPU {B.cpu_name()}, load {B.loadavg()}")
    print(f"# memory: {memory.what}")
    runs.print_table(B.fmt_bytes)
    print(f"# ours vs reference (same weights): inside {rel(outs['ours, inside the window'], outs['reference, inside']):.1e}, "
          f"after {rel(outs['ours, after the window'], outs['reference, after']):.1e}; "
          f"exciting moved the reference by {rel(outs['reference, inside'], outs['diffusers plain CFG']):.1e}")
    ok = True
    for ours_name, ref_name, strict in (("ours, inside the window", "reference, inside", False),
                                        ("ours, after the window", "reference, after", True),
                                        ("ours, refining at step 0", "reference, refining at step 0", True)):
        if ours_name not in calls:
            continue
        ours, ref = calls[ours_name][0] * a.steps, calls[ref_name][0] * a.steps
        good = ours < ref if strict else ours <= ref
        ok &= good
        print(f"{'PASS' if good else 'FAIL'} UNet forwards per run, {ours_name[6:]}: ours {ours:g} "
              f"{'<' if strict else '<='} reference {ref:g}")
    m_ours, m_ref = mem["ours, inside the window"], mem["reference, inside"]
    if m_ours is not None and m_ref is not None:
        good = m_ours <= 1.05 * m_ref
        ok &= good
        print(f"{'PASS' if good else 'FAIL'} peak memory inside the window: ours {B.fmt_bytes(m_ours)} <= reference "
              f"{B.fmt_bytes(m_ref)} (+5%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
