"""Train the demo model on synthetic scenes: python -m demo.train [--minutes M] [--steps N].

Seeded and resumable: the full training state (weights, EMA, optimizer, step, elapsed time)
goes to --state every --save-minutes, and so do the EMA weights to --out (the shipped
demo/model.safetensors, fp16, with step and training time in its metadata). Running the
same command again continues where it stopped; the data of step i depends only on
(seed, i), so an interrupted and resumed run sees the same batches as an uninterrupted one.

Captions: the full description ("a red circle and a blue square", objects in random order)
most of the time; sometimes colours only ("red and blue") or shapes only ("a circle and a
square"), so single-concept prompts such as "red" mean something (SEGA); and "" with
probability --drop for classifier-free guidance.
"""
import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import scenes
from .model import WEIGHTS, DemoModel, alphas_cumprod, load

HERE = Path(__file__).resolve().parent


def training_caption(scene, g, drop, partial):
    u = float(torch.rand((), generator=g))
    items = list(scene.content.items())
    order = torch.randperm(len(items), generator=g).tolist()
    items = [items[i] for i in order]
    if u < drop:
        return ""
    if u < drop + partial / 2:
        return " and ".join(c for c, _ in items)
    if u < drop + partial:
        return " and ".join(f"a {s}" for _, s in items)
    return " and ".join(f"a {c} {s}" for c, s in items)


def data(seed, step, batch, drop, partial):
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    images, scene_list, _ = scenes.batch(g, batch)
    captions = [training_caption(s, g, drop, partial) for s in scene_list]
    t = torch.randint(0, 1000, (batch,), generator=g)
    noise = torch.randn(images.shape, generator=g)
    return images, captions, t, noise


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20000, help="stop after this many steps in total")
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes in this run")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200, help="linear learning-rate warmup steps")
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--drop", type=float, default=0.1, help="caption dropout (empty caption) for CFG")
    p.add_argument("--partial", type=float, default=0.1, help="colours-only / shapes-only captions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--causal-text", action="store_true", help="a causal text encoder (as CLIP's); with --init it "
                                                              "replaces the starting weights' bidirectional one")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save-minutes", type=float, default=3.0)
    p.add_argument("--state", default=str(HERE / "train_state.pt"), help="resumable training state (not shipped)")
    p.add_argument("--out", default=str(WEIGHTS), help="EMA weights written at every save")
    p.add_argument("--init", default=None, help="start from these weights (model and EMA; a fresh optimizer; "
                                                "step and minutes go on from the file's) when --state does not exist")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    model = DemoModel(text_config={"causal": args.causal_text})
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    step, elapsed = 0, 0.0
    if Path(args.state).exists():
        state = torch.load(args.state, weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["seconds"]
        print(f"resumed at step {step} ({elapsed / 60:.1f} min trained)", flush=True)
    elif args.init:
        start, meta = load(args.init)
        model.load_state_dict(start.state_dict())
        ema.load_state_dict(start.state_dict())
        step, elapsed = int(meta.get("step", 0)), 60 * float(meta.get("train_minutes", 0))
        print(f"starting from {args.init} (step {step}, {elapsed / 60:.1f} min trained; fresh optimizer)", flush=True)
    abar = alphas_cumprod().float()

    def save():
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step,
                    "seconds": elapsed, "args": vars(args)}, args.state + ".tmp")
        Path(args.state + ".tmp").replace(args.state)
        ema.save(args.out + ".tmp", {"step": step, "train_minutes": round(elapsed / 60, 1), "batch": args.batch,
                                     "seed": args.seed, "lr": args.lr})
        Path(args.out + ".tmp").replace(args.out)
        print(f"saved step {step} ({elapsed / 60:.1f} min) to {args.out}", flush=True)

    started = last_save = time.monotonic()
    run_start_elapsed, losses = elapsed, []
    while step < args.steps:
        if args.minutes is not None and time.monotonic() - started > args.minutes * 60:
            break
        t0 = time.monotonic()
        images, captions, t, noise = data(args.seed, step, args.batch, args.drop, args.partial)
        a = abar[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * images + (1 - a).sqrt() * noise
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
        loss = F.mse_loss(model.unet(noisy, t, model.text.encode(captions)), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        step += 1
        elapsed += time.monotonic() - t0
        losses.append(loss.item())
        if step % 50 == 0:
            print(f"step {step} loss {sum(losses) / len(losses):.4f} ({elapsed / 60:.1f} min, "
                  f"{(elapsed - run_start_elapsed) / max(1, len(losses)):.2f} s/step this run)", flush=True)
            losses, run_start_elapsed = [], elapsed
        if time.monotonic() - last_save > args.save_minutes * 60:
            save()
            last_save = time.monotonic()
    save()


if __name__ == "__main__":
    main()
