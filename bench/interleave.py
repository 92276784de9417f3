"""What the benches share: their host options, counting UNet forwards, and timing several
configurations interleaved in one run (bench_step.py's module docstring says what the
clocks and the memory measure are)."""
import statistics
import time


def add_host_options(p):
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads on CPU (default 1, the fastest on the 2-core reference machine)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto (default): cuda when torch sees a GPU, else cpu")
    p.add_argument("--attention", choices=["pytorch", "comfy-default"], default="pytorch",
                   help="pytorch: ComfyUI's --use-pytorch-cross-attention (SDPA); comfy-default: ComfyUI's own pick "
                        "(default: pytorch)")


def balanced_order(configs, r):
    """Round r's order: odd rounds run the previous round backwards, so a linear drift over two
    rounds gives every configuration the same mean; the start rotates every two rounds."""
    n = len(configs)
    order = [configs[(r // 2 + i) % n] for i in range(n)]
    return order[::-1] if r % 2 else order


def timed(call, memory):
    """(wall s, process CPU s, peak memory, output) of one call; memory: bench_step.Memory."""
    memory.start()
    w, c = time.perf_counter(), time.process_time()
    out = call()
    if memory.cuda:
        memory.torch.cuda.synchronize()
    return time.perf_counter() - w, time.process_time() - c, memory.stop(), out


def sample_rounds(configs, repeats, steps, call, memory, log=False):
    """configs: (name, *args) tuples; call(*args) samples `steps` steps. Runs `repeats` rounds in
    balanced_order; returns per-name lists of wall s/step, CPU s/step, peak memory, and each
    name's first output. log: a line per call (for runs where one call takes minutes)."""
    names = [c[0] for c in configs]
    wall, cpu, mems = ({n: [] for n in names} for _ in range(3))
    outs = {}
    width = max(map(len, names))
    for r in range(repeats):
        for name, *args in balanced_order(configs, r):
            dw, dc, peak, out = timed(lambda: call(*args), memory)
            wall[name].append(dw / steps)
            cpu[name].append(dc / steps)
            mems[name].append(peak)
            outs.setdefault(name, out)
            if log:
                print(f"    round {r + 1}/{repeats}  {name:<{width}} {dw / steps:8.2f} s/step wall "
                      f"{dc / steps:8.2f} s/step cpu", flush=True)
    return wall, cpu, mems, outs


class ForwardCounter:
    """Counts a module's forwards, and how many ran with gradients enabled."""

    def __init__(self, module):
        import torch
        self.torch, self.calls, self.grad = torch, 0, 0
        module.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.calls += 1
        self.grad += int(self.torch.is_grad_enabled())


class HostRuns:
    """Configurations {name: (host, fn)} measured side by side, host "comfy" or "diffusers" (whose
    UNets the counters watch). One warm-up call each gives its output and its UNet forwards per
    step (with grad); then `repeats` rounds in balanced_order give the median s/step and peak
    memory per call."""

    def __init__(self, configs, counters, memory, steps, repeats):
        self.configs, self.names = configs, list(configs)
        self.outs, self.calls = {}, {}
        times, mems = {k: [] for k in self.names}, {k: [] for k in self.names}
        for name in self.names:
            host, fn = configs[name]
            c = counters[host]
            c.calls = c.grad = 0
            self.outs[name] = fn()
            self.calls[name] = (c.calls / steps, c.grad / steps)
        for r in range(repeats):
            for name in balanced_order(self.names, r):
                dw, _, peak, _ = timed(configs[name][1], memory)
                times[name].append(dw / steps)
                mems[name].append(peak)
        self.step = {k: statistics.median(v) for k, v in times.items()}
        self.mem = {k: (statistics.median(v) if None not in v else None) for k, v in mems.items()}

    def print_table(self, fmt_bytes, extra=None):
        """The markdown table; extra = (column title, name -> cell) adds a column."""
        title = f" {extra[0]} |" if extra else ""
        print("| configuration | s/step (median) | x own plain CFG | UNet forwards/step (with grad) | peak memory |"
              + title)
        print("| --- | ---: | ---: | ---: | ---: |" + (" ---: |" if extra else ""))
        for name in self.names:
            base = "ComfyUI plain CFG" if self.configs[name][0] == "comfy" else "diffusers plain CFG"
            calls, grad = self.calls[name]
            print(f"| {name} | {self.step[name]:.4f} | {self.step[name] / self.step[base]:.2f} | {calls:g} ({grad:g}) | "
                  f"{fmt_bytes(self.mem[name])} |" + (f" {extra[1](name)} |" if extra else ""))


def rel(x, y):
    """max |x - y| / max |y|"""
    return float((x - y).abs().max() / y.abs().max())


def sd15_pair(D, res, sd15_unet):
    """A random diffusers SD1.5 UNet and the ComfyUI model holding the same weights, for a
    res-px image (diffusers_in_comfy as D; sd15_unet: ComfyUI's SD15 unet_config)."""
    import torch
    import comfy.supported_models
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=res // 8).eval()
    cfg = comfy.supported_models.SD15(dict(sd15_unet))
    cfg.set_inference_dtype(torch.float32, None)
    return unet, D._convert(unet, cfg)
