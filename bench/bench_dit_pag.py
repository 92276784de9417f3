"""Per-step cost of attnguide PAG on a diffusion transformer (DiT), shared prefix against unshared,
per perturbed block, against plain CFG.

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_dit_pag.py [--model flux|sd3] [--size bench|tiny]
                                                                [--repeats R] [--layers j0,s0,s4,s7]

The model is built with ComfyUI's own classes (comfy.supported_models.Flux / SD3) from a
hand-written config (ComfyUI's model detection only knows the real sizes), with random weights
scaled by fan-in (tests/support/comfy_host._init), fp32, and sampled with comfy.sample.sample (euler,
"normal", seed 0, one step per call by default). The conditioning is random text tokens and a
pooled vector; the negative is zeros of the same shape, so cond and uncond run in one call.

Configurations, all in one interleaved run (interleave.sample_rounds, as bench_step.py):
    CFG 7: plain CFG | for each --layers block B: PAG B (shared prefix) | PAG B unshared
    CFG 1: plain (cond only) | the same PAG pairs at CFG 1
PAG is the pack's node (attnguide.nodes.pag.PerturbedAttentionGuidance.execute, scale 3,
layers = B). "Shared" is the node as shipped: the blocks before B run on the cond/uncond rows
only and their outputs are gathered for the perturbed copy. "Unshared" is the same model with
attnguide.comfyui.dit._split patched to return None during the call, so the copy runs every block.

The bound (issue 17): per-step cost <= (1 + 0.5 x share) x plain CFG, share = the fraction of one
row's model FLOPs from B on (B, every later block, the final layer). At CFG 1 a plain step has
one row, so the same FLOP reasoning gives 1 + share x plain CFG-1 step; the script prints that
as the CFG-1 bound (the literal 1 + 0.5 x share cannot hold there against a one-row step, and
against a two-row plain CFG step it always holds: (1 + share) / 2 <= 1).

FLOPs are counted, not estimated: torch.utils.flop_counter.FlopCounterMode over one batch-1
forward of the diffusion model, read at every block's entry. It counts matrix products and
attention (the CPU SDPA kernel, aten._scaled_dot_product_flash_attention_for_cpu, gets the
counter's own SDPA formula registered here); element-wise work (norms, modulation, RoPE, GELU)
is not counted.

It also prints the rows each block ran in the warm-up call (the shared path runs the blocks
before B on 2 rows at CFG, 1 at CFG 1; unshared on 3 and 2), and the largest difference of the
sampled latent between shared and unshared (the shared prefix must not change the result).
Exit status 0 when every configuration meets its bound on CPU time (wall time on CUDA), else 1.
"""
import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step  # noqa: E402
from interleave import add_host_options, sample_rounds  # noqa: E402

CFG = bench_step.CFG
PAG_SCALE = bench_step.PAG_SCALE

# (ComfyUI config class, unet_config, latent (C, H, W), text tokens, text dim, pooled dim)
MODELS = {
    ("flux", "bench"): ("Flux", {
        "image_model": "flux", "in_channels": 16, "patch_size": 2, "out_channels": 16, "vec_in_dim": 256,
        "context_in_dim": 256, "hidden_size": 384, "mlp_ratio": 4.0, "num_heads": 6, "depth": 4,
        "depth_single_blocks": 8, "axes_dim": [16, 24, 24], "theta": 10000, "qkv_bias": True,
        "guidance_embed": False}, (16, 64, 64), 256, 256, 256),
    ("flux", "tiny"): ("Flux", {
        "image_model": "flux", "in_channels": 16, "patch_size": 2, "out_channels": 16, "vec_in_dim": 32,
        "context_in_dim": 32, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 2,
        "depth_single_blocks": 3, "axes_dim": [8, 12, 12], "theta": 10000, "qkv_bias": True,
        "guidance_embed": False}, (16, 16, 16), 32, 32, 32),
    ("sd3", "bench"): ("SD3", {
        "in_channels": 16, "pos_embed_scaling_factor": None, "patch_size": 2, "depth": 8,
        "num_patches": 64 * 64, "pos_embed_max_size": 64, "adm_in_channels": 256, "out_channels": 16,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 256, "out_features": 512}}},
        (16, 64, 64), 256, 256, 256),
    ("sd3", "tiny"): ("SD3", {
        "in_channels": 16, "pos_embed_scaling_factor": None, "patch_size": 2, "depth": 3,
        "num_patches": 64 * 64, "pos_embed_max_size": 64, "adm_in_channels": 32, "out_channels": 16,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 32, "out_features": 192}}},
        (16, 16, 16), 32, 32, 32),
}
DEFAULT_LAYERS = {("flux", "bench"): "j0,s0,s4,s7", ("flux", "tiny"): "j0,s0,s2",
                  ("sd3", "bench"): "j0,j1,j4,j7", ("sd3", "tiny"): "j0,j1,j2"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench/bench_dit_pag.py",
                                description="Per-step time and memory of attnguide PAG on a DiT, shared prefix vs "
                                            "unshared, per perturbed block, vs plain CFG, at CFG 7 and CFG 1. "
                                            "Needs COMFYUI_PATH.")
    p.add_argument("--model", choices=["flux", "sd3"], default="flux")
    p.add_argument("--size", choices=["bench", "tiny"], default="bench")
    p.add_argument("--steps", type=int, default=None, help="steps per sampling call (default 1; tiny 2)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 5; tiny 7)")
    p.add_argument("--layers", default=None, help="comma-separated blocks, each perturbed alone (default: an early, "
                                                  "a middle and a late block, e.g. j0,s0,s4,s7 for flux)")
    add_host_options(p)
    a = p.parse_args(argv)
    tiny = a.size == "tiny"
    a.steps = a.steps or (2 if tiny else 1)
    a.repeats = a.repeats or (7 if tiny else 5)
    a.layers = (a.layers or DEFAULT_LAYERS[(a.model, a.size)]).split(",")
    return a


def build_model(comfy_host, kind, size):
    import comfy.supported_models
    import torch
    cls, unet, *_ = MODELS[(kind, size)]
    cfg = getattr(comfy.supported_models, cls)(dict(unet))
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({})
    model.diffusion_model.to(torch.float32)
    return comfy_host._patcher(comfy_host._init(model))


def conds(kind, size):
    import torch
    *_, tokens, text_dim, pooled_dim = MODELS[(kind, size)]
    g = torch.Generator().manual_seed(1)
    pos = [[torch.randn(1, tokens, text_dim, generator=g), {"pooled_output": torch.randn(1, pooled_dim, generator=g)}]]
    neg = [[torch.zeros(1, tokens, text_dim), {"pooled_output": torch.zeros(1, pooled_dim)}]]
    return pos, neg


def register_cpu_sdpa_flops():
    """FlopCounterMode knows the CUDA SDPA kernels; the CPU one gets the same formula."""
    import torch
    from torch.utils.flop_counter import (
        flop_registry,
        register_flop_formula,
        sdpa_flop_count,
    )
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None or op in flop_registry:
        return

    @register_flop_formula(op)
    def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_profile(model, pos, latent_shape):
    """(one row's forward FLOPs, {layer: FLOPs from that block's entry to the end of the forward})."""
    import torch
    from attnguide.attention.dit_blocks import dit_blocks, dit_family
    from torch.utils.flop_counter import FlopCounterMode
    register_cpu_sdpa_flops()
    dm = model.model.diffusion_model
    counter, entered = FlopCounterMode(display=False), {}
    handles = [block.register_forward_pre_hook(lambda m, a, layer=layer: entered.setdefault(layer, counter.get_total_flops()) and None)
               for layer, block in dit_blocks(dm, dit_family(dm))]
    kwargs = {"context": pos[0][0], "y": pos[0][1]["pooled_output"]}
    try:
        with torch.no_grad(), counter:
            dm(torch.randn(1, *latent_shape), torch.full((1,), 0.5), **kwargs)
    finally:
        for h in handles:
            h.remove()
    total = counter.get_total_flops()
    return total, {layer: total - at for layer, at in entered.items()}


class BlockRows:
    """Rows in each block's output during one call (a forward hook registered before the
    router's, so it sees what the block itself ran on, before the gather)."""

    def __init__(self, model):
        from attnguide.attention.dit_blocks import dit_blocks, dit_family
        dm = model.model.diffusion_model
        self.rows, self.on = {}, False
        self.handles = [block.register_forward_hook(lambda m, a, out, layer=layer: self.record(layer, out))
                        for layer, block in dit_blocks(dm, dit_family(dm))]

    def record(self, layer, out):
        if self.on:
            first = next(o for o in (out if isinstance(out, tuple) else (out,)) if o is not None)
            self.rows.setdefault(str(layer), first.shape[0])

    def take(self):
        rows, self.rows = self.rows, {}
        return rows

    def close(self):
        for h in self.handles:
            h.remove()


class GatherCost:
    """Time and bytes of the shared path's own work: the pre-hooks that narrow a prefix block's
    inputs to the shared rows and the hooks that gather its outputs for the copies (wraps
    attnguide.comfyui.dit._narrow/_widen while on)."""

    def __init__(self):
        self.seconds = self.bytes = 0.0

    def wrap(self, make, counts_output):
        def factory(*a):
            hook = make(*a)

            def timed_hook(*args):
                t = time.perf_counter()
                out = hook(*args)
                self.seconds += time.perf_counter() - t
                if counts_output:
                    self.bytes += sum(o.numel() * o.element_size() for o in (out if isinstance(out, tuple) else (out,))
                                      if hasattr(o, "numel"))
                return out
            return timed_hook
        return factory

    @contextlib.contextmanager
    def on(self):
        from attnguide.comfyui import dit
        saved = dit._narrow, dit._widen
        dit._narrow, dit._widen = self.wrap(saved[0], False), self.wrap(saved[1], True)
        try:
            yield self
        finally:
            dit._narrow, dit._widen = saved

    def take(self):
        out = (self.seconds, self.bytes)
        self.seconds = self.bytes = 0.0
        return out


def batch_scaling(model, pos, latent_shape, repeats=3):
    """Median CPU seconds of one bare forward of the diffusion model at batch 1, 2, 3 (interleaved)."""
    import torch
    dm, times = model.model.diffusion_model, {1: [], 2: [], 3: []}
    for _ in range(repeats):
        for b in times:
            x = torch.randn(b, *latent_shape)
            kwargs = {"context": pos[0][0].expand(b, -1, -1), "y": pos[0][1]["pooled_output"].expand(b, -1)}
            with torch.no_grad():
                t = time.process_time()
                dm(x, torch.full((b,), 0.5), **kwargs)
                times[b].append(time.process_time() - t)
    return {b: statistics.median(v) for b, v in times.items()}


@contextlib.contextmanager
def unshared(active):
    """attnguide.comfyui.dit._split -> None: the perturbed copies run every block."""
    from attnguide.comfyui import dit
    if not active:
        yield
        return
    saved = dit._split
    dit._split = lambda *a, **k: None
    try:
        yield
    finally:
        dit._split = saved


def rows_line(rows):
    """'2 rows j0-s3, 3 rows s4-s7' from {layer name: rows}."""
    parts, last = [], None
    for name, n in rows.items():
        if last and last[0] == n:
            last[2] = name
        else:
            last = [n, name, name]
            parts.append(last)
    return ", ".join(f"{n} rows {a}" + (f"-{b}" if b != a else "") for n, a, b in parts)


def main(argv=None):
    a = parse_args(argv)
    comfy_host, device = bench_step.setup_comfy(a)
    import comfy.ldm.modules.attention as host_attention
    import torch
    from attnguide.attention.dit_blocks import dit_family, dit_layers
    from attnguide.attention.layers import forward_order, parse_layers
    from attnguide.nodes.pag import PerturbedAttentionGuidance as PAG

    base = build_model(comfy_host, a.model, a.size)
    dm = base.model.diffusion_model
    layers = dit_layers(dm, dit_family(dm))
    pos, neg = conds(a.model, a.size)
    latent_shape = MODELS[(a.model, a.size)][2]
    latent = torch.zeros(1, *latent_shape)
    mem = bench_step.Memory(device)

    def pag(sel):
        return PAG.execute(base, scale=PAG_SCALE, adaptive_scale=0.0, layers=sel, rescale=0.0, start_percent=0.0, end_percent=1.0).args[0]

    def run(m, cfg, shared, steps):
        with unshared(not shared):
            return comfy_host.sample(m, pos, neg, latent, steps=steps, cfg=cfg, sampler="euler", scheduler="normal",
                                     seed=0)

    configs, first, selection = [], {}, {}
    for cfg, suffix in ((CFG, ""), (1.0, ", CFG 1")):
        configs.append((f"plain CFG{' 1' if suffix else ''}", base.clone(), cfg, True))
        for sel in a.layers:
            first[sel] = min(parse_layers(sel, layers), key=forward_order)
            m = pag(sel)
            configs += [(f"PAG {sel}{suffix}", m, cfg, True), (f"PAG {sel}{suffix} unshared", m, cfg, False)]
            selection[configs[-2][0]] = selection[configs[-1][0]] = sel

    n_params = sum(p.numel() for p in dm.parameters())
    print("attnguide PAG on a DiT: shared prefix vs unshared")
    print(f"  date        {bench_step.datetime.now(bench_step.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    dev = torch.cuda.get_device_name() if device == "cuda" else f"cpu: {bench_step.cpu_name()}, {os.cpu_count()} cores"
    print(f"  device      {dev}; torch.set_num_threads({torch.get_num_threads()}); torch {torch.__version__}; "
          f"ComfyUI {bench_step.comfy_version()} @ {bench_step.comfy_commit(os.environ['COMFYUI_PATH'])}; "
          f"attention {host_attention.optimized_attention.__name__}")
    unet = MODELS[(a.model, a.size)][1]
    width = unet.get("hidden_size") or 64 * unet["depth"]
    print(f"  model       {a.model}/{a.size}: {type(base.model).__name__}/{type(dm).__name__}, {n_params / 1e6:.1f} M "
          f"params, fp32, hidden {width}, blocks {layers[0]}-{layers[-1]} ({len(layers)}); latent {tuple(latent.shape)} "
          f"= {latent_shape[1] * latent_shape[2] // 4} image tokens, text {tuple(pos[0][0].shape)}")
    print(f"  sampling    euler/normal, {a.steps} step(s) per call, {a.repeats} interleaved round(s) over "
          f"{len(configs)} configurations, PAG scale {PAG_SCALE}, CFG {CFG} and 1")

    total, tail = flop_profile(base, pos, latent_shape)
    share = {sel: tail[first[sel]] / total for sel in a.layers}
    print(f"  FLOPs       one row's forward {total / 1e9:.1f} GFLOP (FlopCounterMode: matmuls + SDPA); share from the "
          f"perturbed block on, and the bounds (CFG: 1 + 0.5 x share; CFG 1: 1 + share):")
    for sel in a.layers:
        print(f"              PAG {sel:<4} share {share[sel]:6.1%}   CFG {1 + 0.5 * share[sel]:.3f}   "
              f"CFG 1 {1 + share[sel]:.3f}")
    scale = batch_scaling(base, pos, latent_shape, 3 if a.size == "bench" else 7)
    print(f"  batch       bare forward, cpu s (median of 3, interleaved): batch 1 {scale[1]:.3f}, 2 {scale[2]:.3f}, "
          f"3 {scale[3]:.3f}; batch 3 / batch 2 = {scale[3] / scale[2]:.3f} (FLOPs: 1.5), batch 2 / batch 1 = "
          f"{scale[2] / scale[1]:.3f} (FLOPs: 2)")
    print(f"  load avg    {bench_step.loadavg()} (start)", flush=True)

    rows, gather = BlockRows(base), GatherCost()
    warm, diffs = {}, {}
    for name, m, cfg, shared in configs:  # warm-up: one call each, the rows its blocks ran, the gather's cost
        rows.on = True
        with gather.on():
            warm[name] = run(m, cfg, shared, a.steps)
        rows.on = False
        r = rows.take()
        g_s, g_b = gather.take()
        cost = f"; narrow+gather hooks {g_s * 1e3 / a.steps:.1f} ms/step, gathered {bench_step.fmt_bytes(g_b / a.steps)}/step" \
            if g_b else ""
        print(f"  warm-up     {name:<26} {rows_line(r)}{cost}", flush=True)
    rows.close()
    for name, *_ in configs:
        if name.endswith(" unshared"):
            diffs[name[:-len(" unshared")]] = float((warm[name[:-len(' unshared')]] - warm[name]).abs().max())

    wall, cpu, mems, outs = sample_rounds(configs, a.repeats, a.steps, lambda m, cfg, shared: run(m, cfg, shared, a.steps),
                                          mem, log=a.size == "bench")
    print(f"  load avg    {bench_step.loadavg()} (end)")

    med_w = {k: statistics.median(v) for k, v in wall.items()}
    med_c = {k: statistics.median(v) for k, v in cpu.items()}
    ref = {name: ("plain CFG 1" if cfg == 1.0 else "plain CFG") for name, _, cfg, _ in configs}
    cpu_clock = device == "cpu"
    clock = med_c if cpu_clock else med_w
    print()
    print(f"{'configuration':<26} {'wall s/step':>11} {'x plain':>8} {'round range':>12} {'cpu s/step':>10} "
          f"{'x plain':>8} {'bound':>6} {'verdict':>7} {'saved':>11} {'peak mem':>9} {'|shared-unsh|':>13} {'|out-plain|':>11}")
    ok = []
    for name, _, cfg, shared in configs:
        rounds = [t / p for t, p in zip(wall[name], wall[ref[name]])]
        ms = [x for x in mems[name] if x is not None]
        rng = f"{min(rounds):.2f}-{max(rounds):.2f}"
        sel = selection.get(name)
        bound = verdict = saved = ""
        if sel and shared:
            un = clock[name + " unshared"] / clock[ref[name]]
            saved = f"{(un - clock[name] / clock[ref[name]]) / (un - 1):.2f}/{1 - share[sel]:.2f}"
        if sel:
            b = 1 + (share[sel] if cfg == 1.0 else 0.5 * share[sel])
            bound = f"{b:.3f}"
            if shared:
                met = clock[name] / clock[ref[name]] <= b
                ok.append(met)
                verdict = "PASS" if met else "FAIL"
            else:
                verdict = "(ref)"
        diff = f"{diffs[name]:.2g}" if name in diffs else ""
        change = float((outs[name] - outs[ref[name]]).abs().mean())
        print(f"{name:<26} {med_w[name]:11.3f} {med_w[name] / med_w[ref[name]]:8.2f} {rng:>12} "
              f"{med_c[name]:10.3f} {med_c[name] / med_c[ref[name]]:8.2f} {bound:>6} {verdict:>7} {saved:>11} "
              f"{bench_step.fmt_bytes(statistics.median(ms) if ms else None):>9} {diff:>13} {change:11.3g}")
    print(f"  x plain: ratio of medians to plain CFG at the same CFG scale, in this run; round range: per-round wall "
          f"ratios; verdict: {'cpu' if cpu_clock else 'wall'} ratio <= bound (shared rows only; unshared for reference)")
    print("  saved: measured/expected share of the copy's extra cost the shared prefix saves: (unshared - shared) / "
          "(unshared - 1) in x plain, against 1 - share (FLOPs); 1 + share x (unshared - 1) is the bound at this "
          "machine's cost of a row")
    print(f"  peak mem: {mem.what}; median over rounds")
    print("  |shared-unsh|: max |latent shared - latent unshared| (warm-up call); |out-plain|: mean |latent - plain's|")
    print("  raw wall s/step per round: " + "; ".join(f"{k}: " + " ".join(f"{x:.3f}" for x in v) for k, v in wall.items()))
    if cpu_clock:
        print("  raw cpu s/step per round:  " + "; ".join(f"{k}: " + " ".join(f"{x:.3f}" for x in v)
                                                         for k, v in cpu.items()))
    print(f"  {sum(ok)}/{len(ok)} shared configurations within their bound")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
