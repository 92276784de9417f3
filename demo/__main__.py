"""python -m demo --out DIR: run every landed method on the shipped demo model, write
DIR/sheet.png (baseline vs guided per method) and DIR/effects.json (each paper's effect)."""
import argparse
import json
import time
from pathlib import Path

import torch

from . import judge as judges
from . import model as models
from . import progress
from .effects import EXPERIMENTS
from .sheet import contact_sheet


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    p.add_argument("--out", required=True, help="folder for sheet.png and effects.json")
    p.add_argument("--n", type=int, default=32, help="prompts (samples) per experiment")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default=",".join(EXPERIMENTS), help=f"comma list of: {', '.join(EXPERIMENTS)}")
    p.add_argument("--weights", default=str(models.WEIGHTS))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in EXPERIMENTS]
    if unknown:
        p.error(f"--methods: unknown {unknown}; choose from {', '.join(EXPERIMENTS)}")
    if args.n < 2:
        p.error("--n must be at least 2 (the interval needs two pairs)")
    reporter = progress.Reporter(len(names))
    reporter.line(f"loading {args.weights}; {len(names)} experiments, {args.n} prompts, {args.steps} steps each")
    model, meta = models.load(args.weights)
    judge = judges.load()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, report = [], {}
    with progress.reporting(reporter):
        for name in names:
            start = time.monotonic()
            reporter.experiment(name)
            r = EXPERIMENTS[name](model, judge, args.n, args.steps, args.seed)
            results.append(r)
            report[name] = r.effect.summary()
            s = report[name]
            reporter.line(f"{name}: {s['metric']} {s['baseline']:.4f} -> {s['guided']:.4f} "
                          f"(difference {s['difference']:+.4f}, 95% CI {s['difference_95ci']}, n={s['n']}, "
                          f"effect shown: {s['effect_shown']}) [{time.monotonic() - start:.0f} s]")
    model_info = {k: meta[k] for k in ("step", "train_minutes", "batch", "seed") if k in meta}
    (out / "effects.json").write_text(json.dumps({"model": model_info, "weights": Path(args.weights).name,
                                                  "effects": report}, indent=2) + "\n")
    contact_sheet(results).save(out / "sheet.png")
    reporter.line(f"wrote {(out / 'effects.json').resolve()}")
    print(f"Sheet: {(out / 'sheet.png').resolve()}", flush=True)

if __name__ == "__main__":
    main()
