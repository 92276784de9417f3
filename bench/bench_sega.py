"""Per-step cost of attnguide's SEGA with 1, 2 and 4 concepts against plain CFG, in one run.

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_sega.py [--size sd15-256|sd15-512|tiny] [--repeats R]

Same set-up as bench_step.py (ComfyUI's own SD1.5 model class with random weights, fp32,
euler/normal, CFG 7, SDPA, 1 thread by default, interleaved balanced rounds, medians). SEGA
runs every concept in the step's main UNet call, so a step costs one forward at batch 2 + C;
the target is per-step time <= 1.05 x (2 + C) / 2 plain CFG steps (the pass-count limit).
Exit status 0 when every target is met, 1 otherwise, 2 when ComfyUI cannot be set up.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step as B  # noqa: E402
from interleave import add_host_options, balanced_order  # noqa: E402

LATENT = {"sd15-512": 64, "sd15-256": 32, "tiny": 16}
CONCEPTS = (1, 2, 4)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench/bench_sega.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(LATENT), default="sd15-256",
                   help="sd15-256 (default): SD1.5 UNet at a 32x32 latent; sd15-512: 64x64; tiny: test model")
    p.add_argument("--steps", type=int, default=1, help="sampler steps per call (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    add_host_options(p)
    return p.parse_args(argv)


def configurations(base, comfy_host):
    from attnguide.nodes.sega import SEGAConcept, SemanticGuidance
    configs = [("plain CFG", base.clone(), 0)]
    for n in CONCEPTS:
        stack = None
        for i in range(n):
            cond, _ = comfy_host.conds(base, seed=100 + i)
            stack = SEGAConcept.execute(prompt="", direction="add" if i % 2 == 0 else "remove", scale=5.0, warmup=0, cooldown=-1, timing="steps", threshold=0.9, weight=1.0,
                                        conditioning=cond, concepts=stack).args[0]
        configs.append((f"SEGA {n} concept{'s' if n > 1 else ''}", SemanticGuidance.execute(base, stack, momentum_scale=0.1, momentum_beta=0.4).args[0], n))
    return configs


def main(argv=None):
    a = parse_args(argv)
    comfy_host, device = B.setup_comfy(a)
    import torch
    base = B.build_model(comfy_host, "tiny" if a.size == "tiny" else "sd15-512")
    pos, neg = comfy_host.conds(base)
    latent = torch.zeros(1, 4, LATENT[a.size], LATENT[a.size])
    configs = configurations(base, comfy_host)
    mem = B.Memory(device)
    print("attnguide SEGA step benchmark")
    print(f"  device      {'cuda' if device == 'cuda' else 'cpu: ' + B.cpu_name()}; threads {torch.get_num_threads()}")
    print(f"  model       {a.size}: latent {tuple(latent.shape)}, context {tuple(pos[0][0].shape)}; "
          f"ComfyUI {B.comfy_version()} @ {B.comfy_commit(__import__('os').environ['COMFYUI_PATH'])}")
    print(f"  sampling    euler/normal, cfg {B.CFG}, {a.steps} step(s) per call, {a.repeats} interleaved rounds; "
          f"load avg {B.loadavg()}", flush=True)

    batches = []
    hook = base.model.diffusion_model.register_forward_pre_hook(lambda mod, args: batches.append(args[0].shape[0]))

    def run(m):
        batches.clear()
        mem.start()
        w, c = time.perf_counter(), time.process_time()
        comfy_host.sample(m, pos, neg, latent, steps=a.steps, cfg=B.CFG, sampler="euler", scheduler="normal", seed=0)
        return (time.perf_counter() - w) / a.steps, (time.process_time() - c) / a.steps, mem.stop(), list(batches)

    run(configs[0][1])  # warm-up
    wall = {name: [] for name, _, _ in configs}
    cpu = {name: [] for name, _, _ in configs}
    mems, calls = {}, {}
    for r in range(a.repeats):
        for name, m, _ in balanced_order(configs, r):
            t, c, peak, batch = run(m)
            wall[name].append(t)
            cpu[name].append(c)
            mems.setdefault(name, []).append(peak)
            calls[name] = batch
            print(f"    round {r + 1}/{a.repeats}  {name:<18} {t:8.3f} s/step wall {c:8.3f} cpu", flush=True)
    hook.remove()

    plain = statistics.median(wall["plain CFG"])
    plain_cpu = statistics.median(cpu["plain CFG"])
    print(f"\n{'configuration':<19} {'wall s':>8} {'x CFG':>6} {'cpu s':>8} {'x CFG':>6} {'target':>7} "
          f"{'UNet calls/step (batch)':>24} {'peak mem':>9}")
    ok = []
    for name, _, c in configs:
        ratio = statistics.median(wall[name]) / plain
        cpu_ratio = statistics.median(cpu[name]) / plain_cpu
        limit = 1.05 * (2 + c) / 2 if c else None
        if limit:
            ok.append(ratio <= limit)
        ms = [x for x in mems[name] if x is not None]
        print(f"{name:<19} {statistics.median(wall[name]):8.3f} {ratio:6.2f} {statistics.median(cpu[name]):8.3f} "
              f"{cpu_ratio:6.2f} {(f'<={limit:.2f}' if limit else ''):>7} "
              f"{str(calls[name][:len(calls[name]) // a.steps]):>24} {B.fmt_bytes(statistics.median(ms) if ms else None):>9}"
              + ("" if not limit else ("  PASS" if ratio <= limit else "  FAIL")))
    print("  x CFG: ratio of median per-step times to plain CFG in this run (verdict on wall time); cpu: process")
    print(f"  CPU time, which leaves out other processes' time; target 1.05 x (2 + C) / 2; load avg {B.loadavg()}")
    print(f"  {sum(ok)}/{len(ok)} targets met")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
