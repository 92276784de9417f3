"""Per-step cost of attnguide PAG with the shared prefix, per layer selection, against plain CFG.

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_pag_prefix.py [--size sd15-512|tiny] [--repeats R]
                                                                     [--layers m0,u3,d7,d1]

Same models, sampler, interleaving, clocks and memory measure as bench_step.py (its module
docstring says exactly what they are). Configurations, all in one interleaved run:
    CFG 7: plain CFG | PAG <layers> (shared prefix), one per selection | PAG m0 unshared
    CFG 1: plain (cond only) | PAG m0 (shared prefix) | PAG m0 unshared
"Unshared" is the same node built as on a host without diffusion-model wrappers: the
perturbed rows run the whole UNet (the behaviour before the shared prefix).

Targets: default PAG (m0) <= 1.35x plain CFG per step, and <= 1.7x plain at CFG 1.
It also prints the size of the skip activations the output blocks read, held for the
shared rows only (the shared path) or for every row (unshared).
"""
import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step  # noqa: E402
from interleave import add_host_options, sample_rounds, timed  # noqa: E402

TARGETS = {"cfg": 1.35, "cfg1": 1.7}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench/bench_pag_prefix.py",
                                description="Per-step time and memory of attnguide PAG (shared prefix) per layer "
                                            "selection vs plain CFG, at CFG 7 and CFG 1. Needs COMFYUI_PATH.")
    p.add_argument("--size", choices=sorted(bench_step.SIZES), default="sd15-512")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    add_host_options(p)
    p.add_argument("--layers", default=None,
                   help="comma-separated PAG layer selections at CFG 7 (default m0,u3,d7,d1 for sd15-512, "
                        "m0,u2,d3,d1 for tiny)")
    a = p.parse_args(argv)
    d = bench_step.SIZES[a.size]
    a.steps = a.steps or d["steps"]
    a.repeats = a.repeats or (3 if a.size == "sd15-512" else d["repeats"])
    a.layers = (a.layers or ("m0,u3,d7,d1" if a.size == "sd15-512" else "m0,u2,d3,d1")).split(",")
    return a


class SkipSizes:
    """Records the activations the input blocks save for the output blocks during one forward."""

    def __init__(self, model):
        self.sizes = []
        self.handles = [block[-1].register_forward_hook(self.record) for block in model.model.diffusion_model.input_blocks]

    def record(self, module, args, out):
        self.sizes.append((out[0].numel() * out.element_size()))  # one row

    def close(self):
        for h in self.handles:
            h.remove()
        return sum(self.sizes[:len(self.handles)])


def flop_shares(comfy_host, size, selections, latent_hw):
    """Per selection: the fraction of one UNet forward's FLOPs before the split point (the
    SpatialTransformer of the selection's first layer), counted on a meta-device copy of the
    model (no memory, no time), and the per-step ratios to plain CFG that this fraction allows."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    import comfy.supported_models
    from attnguide.attention.layers import forward_order, parse_layers, unet_layers
    from attnguide.comfyui.shared_prefix import _modules_from
    cfg = comfy.supported_models.SD15(dict(bench_step.SD15_UNET)) if size == "sd15-512" else comfy_host.sd1_config()
    with torch.device("meta"):
        dm = cfg.get_model({}, device="meta").diffusion_model
    counter, entered = FlopCounterMode(display=False), {}
    handles = []
    for sel in selections:
        first = min(parse_layers(sel, unet_layers(dm)), key=forward_order)
        module = _modules_from(dm, first)[0]
        handles.append(module.register_forward_pre_hook(
            lambda m, a, sel=sel: entered.setdefault(sel, counter.get_total_flops()) and None))
    ctx_dim = dm.input_blocks[1][-1].transformer_blocks[0].attn2.to_k.in_features
    with torch.device("meta"), counter:
        dm(torch.zeros(1, 4, latent_hw, latent_hw), torch.zeros(1), context=torch.zeros(1, 77, ctx_dim))
    for h in handles:
        h.remove()
    total = counter.get_total_flops()
    return total, {sel: entered[sel] / total for sel in selections}


def main(argv=None):
    a = parse_args(argv)
    comfy_host, device = bench_step.setup_comfy(a)
    import torch
    from attnguide.comfyui import shared_prefix as shared_prefix_comfy
    from attnguide.nodes.pag import PerturbedAttentionGuidance as PAG

    base = bench_step.build_model(comfy_host, a.size)
    pos, neg = comfy_host.conds(base)
    n_lat = bench_step.SIZES[a.size]["latent"]
    latent = torch.zeros(1, 4, n_lat, n_lat)
    mem = bench_step.Memory(device)

    def pag(layers, shared=True):
        saved = shared_prefix_comfy.HAS_WRAPPER
        shared_prefix_comfy.HAS_WRAPPER = shared
        try:
            return PAG.execute(base, scale=bench_step.PAG_SCALE, adaptive_scale=0.0, layers=layers, rescale=0.0, start_percent=0.0, end_percent=1.0).args[0]
        finally:
            shared_prefix_comfy.HAS_WRAPPER = saved

    def run(m, cfg, steps):
        return comfy_host.sample(m, pos, neg, latent, steps=steps, cfg=cfg, sampler="euler", scheduler="normal", seed=0)

    configs = [("plain CFG", base.clone(), bench_step.CFG)]
    configs += [(f"PAG {l}", pag(l), bench_step.CFG) for l in a.layers]
    configs += [("PAG m0 unshared", pag("m0", shared=False), bench_step.CFG),
                ("plain CFG 1", base.clone(), 1.0), ("PAG m0 CFG 1", pag("m0"), 1.0),
                ("PAG m0 CFG 1 unshared", pag("m0", shared=False), 1.0)]

    print("attnguide PAG shared-prefix benchmark")
    print(f"  device      {device}; torch.set_num_threads({torch.get_num_threads()}); torch {torch.__version__}; "
          f"ComfyUI @ {bench_step.comfy_commit(os.environ['COMFYUI_PATH'])}")
    print(f"  model       {a.size}, latent {tuple(latent.shape)}, {a.steps} step(s) per call, {a.repeats} interleaved "
          f"round(s), euler/normal, PAG scale {bench_step.PAG_SCALE}")
    skips = SkipSizes(base)
    timed(lambda: run(configs[0][1], configs[0][2], 1), mem)  # warm-up
    per_row = skips.close()
    print(f"  skips       input-block activations kept for the output blocks: {bench_step.fmt_bytes(per_row)} per row; "
          f"CFG+PAG holds them for 2 rows shared vs 3 unshared ({bench_step.fmt_bytes(2 * per_row)} vs "
          f"{bench_step.fmt_bytes(3 * per_row)}); each is gathered for the copy only when its output block runs")
    total, shares = flop_shares(comfy_host, a.size, a.layers, n_lat)
    print(f"  FLOPs       one UNet row {total / 1e9:.1f} GFLOP; shared before the split, and the per-step ratio to plain "
          "that FLOPs alone allow (CFG: 1 + (1 - share) / 2; CFG 1: 2 - share):")
    for sel, share in shares.items():
        print(f"              PAG {sel:<6} shares {share:6.1%}   CFG {1 + (1 - share) / 2:.3f}   CFG 1 {2 - share:.3f}")
    print(f"  load avg    {bench_step.loadavg()} (start)", flush=True)

    for _, m, cfg in (configs[1:] if a.size == "tiny" else []):
        timed(lambda: run(m, cfg, 1), mem)
    names = [c[0] for c in configs]
    wall, cpu, mems, _ = sample_rounds(configs, a.repeats, a.steps, lambda m, cfg: run(m, cfg, a.steps), mem,
                                       log=a.size == "sd15-512")
    print(f"  load avg    {bench_step.loadavg()} (end)")

    med_w = {k: statistics.median(v) for k, v in wall.items()}
    med_c = {k: statistics.median(v) for k, v in cpu.items()}
    ref = {name: ("plain CFG 1" if cfg == 1.0 else "plain CFG") for name, _, cfg in configs}
    print()
    print(f"{'configuration':<23} {'wall s/step':>11} {'x plain':>8} {'round range':>12} {'cpu s/step':>10} "
          f"{'x plain':>8} {'peak mem':>9}")
    for name in names:
        rounds = [t / p for t, p in zip(wall[name], wall[ref[name]])]
        ms = [x for x in mems[name] if x is not None]
        rng = f"{min(rounds):.2f}-{max(rounds):.2f}"
        print(f"{name:<23} {med_w[name]:11.3f} {med_w[name] / med_w[ref[name]]:8.2f} {rng:>12} "
              f"{med_c[name]:10.3f} {med_c[name] / med_c[ref[name]]:8.2f} "
              f"{bench_step.fmt_bytes(statistics.median(ms) if ms else None):>9}")
    print("  x plain: ratio of medians to plain CFG at the same CFG scale, in this run; peak mem: " + mem.what)
    print("  raw wall s/step per round: " + "; ".join(f"{k}: " + " ".join(f"{x:.3f}" for x in v) for k, v in wall.items()))
    print()
    ok = []
    for label, num, den, limit in (("PAG m0 / plain CFG", "PAG m0", "plain CFG", TARGETS["cfg"]),
                                   ("PAG m0 / plain at CFG 1", "PAG m0 CFG 1", "plain CFG 1", TARGETS["cfg1"])):
        if num not in med_w:
            continue
        w, c = med_w[num] / med_w[den], med_c[num] / med_c[den]
        ok.append(w <= limit)
        print(f"  {'PASS' if w <= limit else 'FAIL'}  {label:<26} wall {w:5.2f}   cpu {c:5.2f} "
              f"{'PASS' if c <= limit else 'FAIL'}   (<= {limit:.2f})")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
