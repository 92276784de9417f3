"""Per-step cost of attnguide's SAG and PAG nodes against plain CFG and ComfyUI's built-ins.

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_step.py [--size sd15-512|tiny] [--steps N] [--repeats R] [--threads T]

Run it with the Python of that ComfyUI's environment (torch, ComfyUI's requirements, pytest:
the model builders come from tests/support/comfy_host.py). Nothing is downloaded: the models are
built from ComfyUI's own model classes with random weights.

Seven configurations sample the same latent with comfy.sample.sample (euler, "normal"
schedule, CFG 7, seed 0):
    plain CFG | attnguide SAG | attnguide PAG | attnguide SAG+PAG
              | built-in SAG  | built-in PAG  | built-in SAG+PAG
at matched settings (SAG scale 0.5, blur sigma 2.0, middle-block layer; PAG scale 3.0,
middle block). The runs are interleaved: each repeat is one round-robin pass over all
configurations, every second round in reverse order (the start also moves every two
rounds), so load drift on the machine hits every configuration alike. Per-step time =
wall time of one sampling call / steps; the table gives the median over repeats and each
method's ratio to plain CFG from the same run (ratio of medians, with the range of the
per-round ratios beside it). On CPU it also gives process CPU time (time.process_time),
which leaves out the time other processes on a shared machine took.

Memory column: on CUDA, torch.cuda.max_memory_allocated during the call minus what was
allocated before it. On CPU, growth of the process's peak resident set (VmHWM, reset
through /proc/self/clear_refs before each call) over its resident set at the start of
the call, after gc and glibc's malloc_trim: all memory the call touched, torch's and the
allocator's, not torch tensors alone; median over repeats. "n/a" where neither exists.

Targets (PASS/FAIL each): attnguide SAG and PAG per step <= 1.55x plain CFG, and not
slower than the built-in node (ratio ours/built-in <= 1 + --tolerance, default 0.03,
the allowance for timing noise); the same "not slower" for SAG+PAG. Exit status 0 when
every target is met, 1 when one is not, 2 when ComfyUI cannot be set up.

The last column, mean |output - plain CFG output|, shows each method changed the result.
Our nodes and the built-ins agree there at these settings (same algorithms), except
built-in SAG+PAG: ComfyUI's SAG node replaces attn1 at ("middle", 0, 0), which shadows
its PAG node's ("middle", 0) replacement, so chained built-in PAG pays its extra UNet
pass but perturbs nothing (the output equals built-in SAG alone).

Sizes:
  sd15-512  SD1.5 UNet (ComfyUI's SD15 config, 860 M parameters, random weights with std
            0.02), fp32, 512x512 image = 1x4x64x64 latent, context 77x768. Defaults
            --steps 1 --repeats 2: on the 2-core reference machine one step of plain CFG
            (a batch-2 UNet forward) takes ~20-40 s, so the default run takes ~8-12 minutes;
            3 steps x 3 repeats would take over half an hour. One call varies by 5-10%
            on that shared VM, so 2 rounds cannot resolve the 3% "not slower" margin
            (one default run read our SAG 1.10x the built-in, a paired A/B 0.97x):
            use --repeats 4 (~15-20 minutes) or more for those verdicts.
  tiny      tests/support/comfy_host.tiny_sd1 (1 M parameters) at a 16x16 latent; a few seconds.
            Defaults --steps 4 --repeats 11. Its ratios show per-call overhead (each UNet
            pass costs about the same at any batch size), not what an SD model pays.

Threads: torch.set_num_threads(--threads), default 1. On the 2-core reference machine
1 thread was faster than 2 (a batch-2 sd15-512 forward: ~21-25 s with 1 thread, 50-61 s
with 2; other processes share the cores and 2 intra-op threads thrash).

Attention: --attention pytorch (default) makes ComfyUI use torch SDPA (its
--use-pytorch-cross-attention, ComfyUI's choice on current GPUs); --attention comfy-default
keeps what ComfyUI picks for the device (sub-quadratic on CPU, ~3x slower there).

Without COMFYUI_PATH the script exits with status 2 and says how to point it at ComfyUI.
"""
import argparse
import ctypes
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from interleave import add_host_options, sample_rounds, timed

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

SIZES = {
    "sd15-512": {"steps": 1, "repeats": 2, "latent": 64, "warmup": "plain"},
    "tiny": {"steps": 4, "repeats": 11, "latent": 16, "warmup": "all"},
}

# ComfyUI's SD15 unet_config (comfy/model_detection.py, unet_config_from_diffusers_unet, "SD15").
SD15_UNET = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
             "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
             "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
             "context_dim": 768, "num_heads": 8,
             "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
             "use_temporal_attention": False, "use_temporal_resblock": False}

CFG = 7.0
SAG_SCALE, SAG_BLUR = 0.5, 2.0  # ComfyUI built-in defaults; ours gets the same
PAG_SCALE = 3.0
SPEED_TARGET = 1.55

NO_COMFY = """bench_step.py needs a ComfyUI checkout: it builds the models with ComfyUI's own
model classes and samples with ComfyUI's own sampler.

Point COMFYUI_PATH at the folder that holds ComfyUI's main.py and run with that
ComfyUI's Python (torch and ComfyUI's requirements, plus pytest), e.g.

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-venv/bin/python bench/bench_step.py --size tiny
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="bench/bench_step.py",
        description="Per-step time and memory of attnguide SAG/PAG vs plain CFG and ComfyUI's built-in "
                    "SAG/PAG, interleaved in one run. Needs COMFYUI_PATH=/path/to/ComfyUI.",
        epilog="Example: COMFYUI_PATH=/path/to/ComfyUI python bench/bench_step.py --size tiny. "
               "Defaults: sd15-512 --steps 1 --repeats 2 (~8-12 min on 2 CPU cores); tiny --steps 4 --repeats 11. "
               "See the module docstring for what is measured.",
    )
    p.add_argument("--size", choices=sorted(SIZES), default="sd15-512",
                   help="sd15-512 (default): SD1.5 UNet, 64x64 latent; tiny: 1 M-parameter SD1-shaped UNet, 16x16 latent")
    p.add_argument("--steps", type=int, default=None, help="sampler steps per call (default: 1 for sd15-512, 4 for tiny)")
    p.add_argument("--repeats", type=int, default=None,
                   help="round-robin rounds over all configurations (default: 2 for sd15-512, 11 for tiny)")
    add_host_options(p)
    p.add_argument("--tolerance", type=float, default=0.03,
                   help="noise allowance for 'not slower than the built-in': PASS if ours/built-in <= 1 + tolerance (default 0.03)")
    a = p.parse_args(argv)
    d = SIZES[a.size]
    a.steps = a.steps or d["steps"]
    a.repeats = a.repeats or d["repeats"]
    if a.steps < 1 or a.repeats < 1 or a.threads < 1:
        p.error("--steps, --repeats and --threads must be >= 1")
    return a


def comfy_commit(path):
    snap = Path(path) / ".snapshot"
    if snap.is_file():
        return snap.read_text().strip()
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:
        return "unknown (no .snapshot, not a git checkout)"


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg():
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


class Memory:
    """Peak memory growth during one call; see the module docstring."""

    def __init__(self, device):
        import torch
        self.torch, self.cuda = torch, device == "cuda"
        self.cpu_ok, self.trim = False, None
        if not self.cuda:
            try:
                self._reset_hwm()
                self._status("VmHWM")
                self.cpu_ok = True
            except (OSError, KeyError, ValueError):
                pass
            try:
                self.trim = ctypes.CDLL(None).malloc_trim  # glibc: hand freed heap pages back first
            except (OSError, AttributeError):
                pass
        self.what = ("torch.cuda.max_memory_allocated growth over the call" if self.cuda else
                     "growth of peak RSS (VmHWM) over RSS at call start, whole process"
                     + (", after malloc_trim" if self.trim else "") if self.cpu_ok else "n/a")

    @staticmethod
    def _reset_hwm():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    @staticmethod
    def _status(key):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    def start(self):
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
            self.base = self.torch.cuda.memory_allocated()
        elif self.cpu_ok:
            gc.collect()
            if self.trim:
                self.trim(0)
            self._reset_hwm()
            self.base = self._status("VmRSS")

    def stop(self):
        if self.cuda:
            self.torch.cuda.synchronize()
            return self.torch.cuda.max_memory_allocated() - self.base
        if self.cpu_ok:
            return self._status("VmHWM") - self.base
        return None


def setup_comfy(a):
    """Make ComfyUI importable headless; returns (comfy_host module, device)."""
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        sys.stderr.write("COMFYUI_PATH is not set.\n\n" + NO_COMFY)
        sys.exit(2)
    if not (Path(path) / "comfy" / "model_management.py").is_file():
        sys.stderr.write(f"COMFYUI_PATH={path} is not a ComfyUI checkout (no comfy/model_management.py).\n\n" + NO_COMFY)
        sys.exit(2)
    import torch
    torch.set_num_threads(a.threads)
    sys.path[:0] = [str(TESTS), str(TESTS / "support")]
    try:
        import comfy_host
        import conftest  # noqa: F401  (imports the pack as the package `attnguide`, as ComfyUI does)
    except ImportError as e:
        sys.stderr.write(f"cannot import the test helpers in {TESTS}: {e}\n"
                         "bench_step.py reuses tests/support/comfy_host.py, which needs pytest: pip install pytest\n")
        sys.exit(2)
    torch.set_num_threads(a.threads)  # conftest sets 1
    device = a.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    # Set ComfyUI's command-line args before comfy.model_management is imported.
    problem = comfy_host.host_import_problem()
    if problem:
        sys.stderr.write(problem + "\n")
        sys.exit(2)
    sys.path.insert(0, path)
    from comfy.cli_args import args
    args.cpu = device == "cpu"
    args.use_pytorch_cross_attention = a.attention == "pytorch"
    comfy_host.require_comfy()
    return comfy_host, device


def build_model(comfy_host, size):
    import torch
    if size == "tiny":
        return comfy_host.tiny_sd1()
    import comfy.supported_models
    cfg = comfy.supported_models.SD15(dict(SD15_UNET))
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({})
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # ComfyUI's ops skip weight init: fill every parameter
        for p in model.diffusion_model.parameters():
            p.normal_(0.0, 0.02, generator=g)
    return comfy_host._patcher(model)


def configurations(base):
    from comfy_extras.nodes_pag import PerturbedAttentionGuidance as BuiltinPAG
    from comfy_extras.nodes_sag import SelfAttentionGuidance as BuiltinSAG
    from attnguide.nodes.pag import PerturbedAttentionGuidance as OurPAG
    from attnguide.nodes.sag import SelfAttentionGuidance as OurSAG

    def our_sag(m):
        return OurSAG.execute(m, scale=SAG_SCALE, blur_sigma=SAG_BLUR, threshold=1.0, layer="m0.0", start_percent=0.0, end_percent=1.0).args[0]

    def our_pag(m):
        return OurPAG.execute(m, scale=PAG_SCALE, adaptive_scale=0.0, layers="m0", rescale=0.0, start_percent=0.0, end_percent=1.0).args[0]

    def bi_sag(m):
        return BuiltinSAG.execute(m, SAG_SCALE, SAG_BLUR).args[0]

    def bi_pag(m):
        return BuiltinPAG.execute(m, PAG_SCALE).args[0]

    return [
        ("plain CFG", base.clone()),
        ("attnguide SAG", our_sag(base)),
        ("attnguide PAG", our_pag(base)),
        ("attnguide SAG+PAG", our_pag(our_sag(base))),
        ("built-in SAG", bi_sag(base)),
        ("built-in PAG", bi_pag(base)),
        ("built-in SAG+PAG", bi_pag(bi_sag(base))),
    ]


def fmt_bytes(n):
    if n is None:
        return "n/a"
    return f"{n / 2 ** 20:.0f} MiB" if abs(n) >= 2 ** 20 else f"{n / 2 ** 10:.0f} KiB"


def main(argv=None):
    a = parse_args(argv)
    comfy_host, device = setup_comfy(a)
    import torch
    import comfy.ldm.modules.attention as host_attention

    t0 = time.perf_counter()
    base = build_model(comfy_host, a.size)
    build_s = time.perf_counter() - t0
    dm = base.model.diffusion_model
    n_params = sum(p.numel() for p in dm.parameters())
    pos, neg = comfy_host.conds(base)
    n_lat = SIZES[a.size]["latent"]
    latent = torch.zeros(1, 4, n_lat, n_lat)
    configs = configurations(base)
    mem = Memory(device)

    print("attnguide step benchmark")
    print(f"  date        {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    dev = torch.cuda.get_device_name() if device == "cuda" else f"cpu: {cpu_name()}, {os.cpu_count()} cores"
    print(f"  device      {dev}; torch.set_num_threads({torch.get_num_threads()})")
    print(f"  software    python {platform.python_version()}, torch {torch.__version__}, "
          f"ComfyUI {comfy_version()} @ {comfy_commit(os.environ['COMFYUI_PATH'])}")
    print(f"  attention   ComfyUI optimized_attention = {host_attention.optimized_attention.__name__}")
    print(f"  model       {a.size}: {type(base.model).__name__}/{type(dm).__name__}, {n_params / 1e6:.2f} M params, "
          f"fp32, model_channels {dm.model_channels}; latent {tuple(latent.shape)}, "
          f"context {tuple(pos[0][0].shape)}; built in {build_s:.1f} s")
    print(f"  sampling    comfy.sample.sample euler/normal, cfg {CFG}, {a.steps} step(s) per call, {a.repeats} "
          f"interleaved round(s) over {len(configs)} configurations; SAG scale {SAG_SCALE} blur {SAG_BLUR} "
          f"(middle block), PAG scale {PAG_SCALE} (middle block)")
    print(f"  load avg    {loadavg()} (start)", flush=True)

    def run(m, steps):
        return comfy_host.sample(m, pos, neg, latent, steps=steps, cfg=CFG, sampler="euler", scheduler="normal", seed=0)

    warm = configs if SIZES[a.size]["warmup"] == "all" else configs[:1]
    t = time.perf_counter()
    for _, m in warm:
        timed(lambda: run(m, 1), mem)
    print(f"  warm-up     1-step call of {'every configuration' if len(warm) > 1 else 'plain CFG'}: "
          f"{time.perf_counter() - t:.1f} s", flush=True)

    names = [name for name, _ in configs]
    wall, cpu, mems, outs = sample_rounds(configs, a.repeats, a.steps, lambda m: run(m, a.steps), mem,
                                          log=a.size == "sd15-512")
    print(f"  load avg    {loadavg()} (end)")

    med_w = {k: statistics.median(v) for k, v in wall.items()}
    med_c = {k: statistics.median(v) for k, v in cpu.items()}
    ref_out = outs["plain CFG"]
    cpu_clock = device == "cpu"
    print()
    print(f"{'configuration':<19} {'wall s/step':>11} {'x CFG':>6} {'round range':>12}"
          + (f" {'cpu s/step':>10} {'x CFG':>6}" if cpu_clock else "")
          + f" {'peak mem':>9} {'|out - CFG out|':>16}")
    for name in names:
        rounds = [t / p for t, p in zip(wall[name], wall["plain CFG"])]
        rng = f"{min(rounds):.2f}-{max(rounds):.2f}"
        ms = [x for x in mems[name] if x is not None]
        mm = fmt_bytes(statistics.median(ms) if ms else None)
        finite = bool(torch.isfinite(outs[name]).all())
        diff = (outs[name] - ref_out).abs().mean().item()
        print(f"{name:<19} {med_w[name]:11.3f} {med_w[name] / med_w['plain CFG']:6.2f} {rng:>12}"
              + (f" {med_c[name]:10.3f} {med_c[name] / med_c['plain CFG']:6.2f}" if cpu_clock else "")
              + f" {mm:>9} {diff:16.4g}{'' if finite else '  NON-FINITE'}")
    print("  s/step: median over rounds of (call time / steps); x CFG: ratio of medians to plain CFG in this run;")
    print("  round range: per-round wall ratios to that round's plain CFG"
          + ("; cpu: process CPU time (time.process_time), which leaves out time other processes took"
             if cpu_clock else ""))
    print(f"  peak mem: {mem.what}; median over rounds")
    print(f"  |out - CFG out|: mean absolute difference of the sampled latent from plain CFG's")
    print("  raw wall s/step per round: " + "; ".join(f"{k}: " + " ".join(f"{x:.3f}" for x in v)
                                                   for k, v in wall.items()))
    if cpu_clock:
        print("  raw cpu s/step per round:  " + "; ".join(f"{k}: " + " ".join(f"{x:.3f}" for x in v)
                                                        for k, v in cpu.items()))

    print()
    print("targets (verdict on wall time" + ("; the cpu-time verdict beside it" if cpu_clock else "") + ")")
    results = []

    def target(label, num, den, limit):
        w = med_w[num] / med_w[den]
        ok = w <= limit
        results.append(ok)
        line = f"  {'PASS' if ok else 'FAIL'}  {label:<51} wall {w:5.2f}"
        if cpu_clock:
            c = med_c[num] / med_c[den]
            line += f"   cpu {c:5.2f} {'PASS' if c <= limit else 'FAIL'}"
        print(line + f"   (<= {limit:.2f})")

    for kind in ("SAG", "PAG"):
        target(f"attnguide {kind} step / plain CFG step", f"attnguide {kind}", "plain CFG", SPEED_TARGET)
    for kind in ("SAG", "PAG", "SAG+PAG"):
        target(f"attnguide {kind} / built-in {kind} (not slower)", f"attnguide {kind}", f"built-in {kind}",
               1.0 + a.tolerance)
    print(f"  {sum(results)}/{len(results)} targets met on wall time "
          f"(noise allowance for 'not slower': {a.tolerance:.0%})")
    return 0 if all(results) else 1


def comfy_version():
    try:
        import comfyui_version
        return comfyui_version.__version__
    except Exception:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
