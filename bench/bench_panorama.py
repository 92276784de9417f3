"""Cost of the MultiDiffusion Panorama node: windows per second and the ratio to plain steps.

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_panorama.py [--size tiny|sd15] [--repeats R] [--threads T]

Run it with the Python of that ComfyUI's environment (it reuses bench_step.py's set-up and
tests/support/comfy_host.py's models; nothing is downloaded, weights are random).

Four configurations, one sampler step per call (comfy.sample.sample, euler, CFG 7), run
interleaved (each round in the opposite order to the previous one):
    plain window   plain CFG on one window-sized latent
    plain full     plain CFG on the whole panorama latent
    panorama wb=1  the Panorama node on the panorama latent, one window per model call
    panorama wb=N  the same, N windows per call (--window-batch)
Reported (medians over rounds): seconds per step, windows per second, and two ratios:
    x windows   panorama step / (windows x plain window step): the node's overhead over
                running the windows one by one as plain images (1.00 = none; batching
                can bring it below 1 where per-call overhead matters);
    x full      panorama step / plain full step: what the overlap costs against one
                plain step over the same image (not the same thing: the plain full step
                sees the whole image in every attention layer).
Sizes:
    tiny  tests/support/comfy_host.tiny_sd1, window 16x16 latent, panorama 16x128, stride 8: 15 windows
          (ratios show per-call overhead, not what an SD model pays).
    sd15  SD1.5 UNet (860 M params, fp32), window 64x64 latent (512 px), panorama 64x160
          (512x1280 px), stride 32: 4 windows. ~25 s per window on 2 CPU cores.
"""
import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step  # noqa: E402
from interleave import add_host_options  # noqa: E402

SIZES = {
    "tiny": {"model": "tiny", "window": 16, "height": 16, "width": 128, "stride": 8, "repeats": 7},
    "sd15": {"model": "sd15-512", "window": 64, "height": 64, "width": 160, "stride": 32, "repeats": 2},
}
CFG = 7.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench/bench_panorama.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default: 7 tiny, 2 sd15)")
    p.add_argument("--window-batch", type=int, default=4, help="windows per model call for the batched run (default 4)")
    add_host_options(p)
    a = p.parse_args(argv)
    a.repeats = a.repeats or SIZES[a.size]["repeats"]
    return a


def main(argv=None):
    a = parse_args(argv)
    comfy_host, device = bench_step.setup_comfy(a)
    import torch
    from attnguide.guidance import panorama as pano
    from attnguide.nodes.panorama import Panorama

    s = SIZES[a.size]
    base = bench_step.build_model(comfy_host, s["model"])
    pos, neg = comfy_host.conds(base)
    px = lambda n: n * 8
    windows = len(pano.layout(s["height"], s["width"], (s["window"],) * 2, (s["stride"],) * 2))

    def panorama(batch):
        return Panorama.execute(base, window_width=px(s["window"]), window_height=px(s["window"]), stride=px(s["stride"]), wrap="none", weights="uniform",
                                window_batch=batch).result[0]

    full = torch.zeros(1, 4, s["height"], s["width"])
    window = torch.zeros(1, 4, s["window"], s["window"])
    configs = [("plain window", base, window), ("plain full", base, full),
               ("panorama wb=1", panorama(1), full), (f"panorama wb={a.window_batch}", panorama(a.window_batch), full)]

    print("attnguide panorama benchmark")
    print(f"  date        {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    dev = torch.cuda.get_device_name() if device == "cuda" else f"cpu: {bench_step.cpu_name()}, {os.cpu_count()} cores"
    print(f"  device      {dev}; torch.set_num_threads({torch.get_num_threads()})")
    print(f"  software    python {platform.python_version()}, torch {torch.__version__}, ComfyUI "
          f"{bench_step.comfy_version()} @ {bench_step.comfy_commit(os.environ['COMFYUI_PATH'])}")
    print(f"  setting     {a.size}: window {s['window']}x{s['window']} latent, panorama {s['height']}x{s['width']}, "
          f"stride {s['stride']} -> {windows} windows; 1 euler step per call, cfg {CFG}, {a.repeats} rounds")
    print(f"  load avg    {bench_step.loadavg()} (start)", flush=True)

    def run(model, latent):
        t = time.perf_counter()
        comfy_host.sample(model, pos, neg, latent, steps=1, cfg=CFG, sampler="euler", scheduler="normal", seed=0)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    for _, m, lat in configs:  # warm-up
        run(m, lat)
    times = {name: [] for name, _, _ in configs}
    for r in range(a.repeats):
        order = configs if r % 2 == 0 else configs[::-1]
        for name, m, lat in order:
            times[name].append(run(m, lat))
    med = {k: statistics.median(v) for k, v in times.items()}

    print()
    print("| configuration | s/step | windows/s | x windows | x full |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, _, _ in configs:
        t = med[name]
        if name.startswith("panorama"):
            print(f"| {name} | {t:.3f} | {windows / t:.3g} | {t / (windows * med['plain window']):.2f} | "
                  f"{t / med['plain full']:.2f} |")
        else:
            print(f"| {name} | {t:.3f} | - | - | - |")
    print(f"  load avg    {bench_step.loadavg()} (end)")


if __name__ == "__main__":
    main()
