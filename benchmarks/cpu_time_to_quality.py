"""CPU time to quality: TinyDiff's ``laptop`` preset against a diffusers baseline, same budget.

    pip install -e ".[bench]"
    python benchmarks/cpu_time_to_quality.py                   # 25 min each, then evaluation (about 1 h)
    python benchmarks/cpu_time_to_quality.py --minutes 5       # a quicker comparison
    python benchmarks/cpu_time_to_quality.py --smoke           # seconds: checks the plumbing only

Both arms train on the same MNIST tensor, with batch 64, AdamW at 1e-3, the same warm-up
and cosine decay, gradient clipping and EMA, for the same wall-clock budget of training
steps (snapshots and checkpoints are not counted), one after the other on this machine:

- TinyDiff: ``tinydiff train --preset laptop`` itself, in a subprocess;
- baseline: diffusers ``UNet2DModel`` (32/64/64, one layer per block, attention at the two
  lower levels, 1.16 M parameters), class-conditional.

Each arm's number of steps is set from a short throughput measurement so its cosine
schedule ends with the budget (``--max-minutes`` stops it in any case). Both are then
sampled and scored by TinyDiff's evaluation (``tinydiff eval``'s code) with the same sampler,
steps and guidance, so at the same number of network evaluations. Results go to
``--out``/results.json and are printed as one table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import (  # noqa: E402
    NULL_LABEL,
    ClassConditional,
    baseline_pipeline,
    check_finite,
    count_parameters,
    diffusers_unet,
    fail,
    machine,
    require_diffusers,
    write_json,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=25.0, help="training budget per arm (default 25)")
    p.add_argument("--num-per-digit", type=int, default=50, help="evaluation images per digit (default 50)")
    p.add_argument("--sampler", default="ddim", help="sampler for both arms (default ddim)")
    p.add_argument("--steps", type=int, default=50, help="sampler steps = network evaluations (default 50)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: TinyDiff's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--preset", default="laptop", help="TinyDiff preset to train (default laptop)")
    p.add_argument("--arms", default="tinydiff,diffusers", help="which arms to run, comma-separated")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_time_to_quality"))
    p.add_argument("--smoke", action="store_true", help="tiny budget and evaluation: checks the plumbing in seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.minutes, args.num_per_digit, args.steps, args.batch_size = 0.02, 2, 2, 16
    return args


def calibrate(step: Callable[[], Any], batch_size: int, warmup: int = 3, timed: int = 8) -> float:
    """Images per second of a training step, after a few warm-up steps."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(timed):
        step()
    return timed * batch_size / (time.perf_counter() - start)


def budget_steps(minutes: float, img_per_s: float, batch_size: int) -> int:
    return max(2, int(minutes * 60 * img_per_s / batch_size))


# -- TinyDiff ----------------------------------------------------------------------
def run_tinydiff(args: argparse.Namespace, data_dir: str | None) -> dict[str, Any]:
    from tinydiff.config import resolve_config
    from tinydiff.pipeline import Pipeline
    from tinydiff.train import Trainer

    run_dir = args.out / f"tinydiff-{args.preset}"
    if run_dir.exists():
        fail(f"{run_dir} already exists; remove it or pass another --out")
    config = resolve_config(args.preset, None, {"train": {"batch_size": args.batch_size, "device": "cpu"}})
    probe = Trainer(config, args.out / ".calibration")
    ips = calibrate(probe.train_step, args.batch_size, *((1, 2) if args.smoke else (3, 8)))
    del probe
    steps = budget_steps(args.minutes, ips, args.batch_size)
    cmd = [sys.executable, "-m", "tinydiff", "train", "--preset", args.preset, "--run-dir", str(run_dir),
           "--steps", str(steps), "--max-minutes", str(args.minutes), "--batch-size", str(args.batch_size),
           "--device", "cpu", "--checkpoint-every", str(steps), "--sample-every", str(steps if args.smoke else max(1, steps // 8))]  # fmt: skip
    print(f"[tinydiff] {ips:.0f} img/s calibrated -> {steps} steps; {' '.join(cmd[2:])}", file=sys.stderr)
    start = time.perf_counter()
    done = subprocess.run(cmd, env={**os.environ, **({"TINYDIFF_DATA_DIR": data_dir} if data_dir else {})})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        fail(f"tinydiff train exited with status {done.returncode}")
    pipe = Pipeline.from_ref(str(run_dir), device="cpu")
    trained = pipe.config.training.get("step")
    return {"arm": f"TinyDiff {args.preset}", "parameters": count_parameters(pipe.model), "steps": trained,
            "img_per_s": metrics_img_per_s(run_dir), "train_wall_s": wall, "pipe": pipe}  # fmt: skip


def metrics_img_per_s(run_dir: Path) -> float:
    import json

    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    rates = [json.loads(line)["img_per_s"] for line in lines if "img_per_s" in line]
    if not rates:
        fail(f"{run_dir}/metrics.jsonl has no throughput figure")
    return sum(rates) / len(rates)


# -- diffusers baseline -------------------------------------------------------------
def run_diffusers(args: argparse.Namespace, data_dir: str | None) -> dict[str, Any]:
    import copy
    import random

    from tinydiff.config import resolve_config
    from tinydiff.data import BatchSampler, load_mnist, to_model_range
    from tinydiff.schedules import NoiseSchedule
    from tinydiff.train import learning_rate, update_ema

    require_diffusers()
    torch.manual_seed(0)
    model = ClassConditional(diffusers_unet("small"))
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    images, labels = load_mnist(data_dir, split="train")
    schedule = NoiseSchedule.from_name("linear", 1000)
    a_all, s_all = schedule.sqrt_alphas_cumprod.float(), schedule.sqrt_one_minus_alphas_cumprod.float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    batches = BatchSampler(len(images), args.batch_size, seed=1)
    gen = torch.Generator().manual_seed(2)
    drop = random.Random(3)
    # the same learning-rate schedule as TinyDiff's (warm-up 200, cosine to 10%), via its config
    cfg = resolve_config(args.preset, None, {"train": {"batch_size": args.batch_size}})
    state = {"step": 0}

    def step() -> float:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(state["step"], cfg)
        idx = batches.next()
        x0 = to_model_range(images[idx])
        y = labels[idx].clone()
        y[torch.tensor([drop.random() < 0.1 for _ in range(len(y))])] = NULL_LABEL
        t = torch.randint(0, 1000, (len(idx),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = a_all[t].view(-1, 1, 1, 1) * x0 + s_all[t].view(-1, 1, 1, 1) * noise
        loss = torch.mean((model(x_t, t, (y,)) - noise) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        update_ema(ema, model, state["step"], 0.999)
        state["step"] += 1
        return float(loss.detach())

    ips = calibrate(step, args.batch_size, *((1, 2) if args.smoke else (3, 8)))
    steps = budget_steps(args.minutes, ips, args.batch_size)
    cfg = resolve_config(args.preset, None, {"train": {"batch_size": args.batch_size, "steps": steps}})
    torch.manual_seed(0)  # calibration steps are thrown away: start again from a fresh init
    model.load_state_dict(ClassConditional(diffusers_unet("small")).state_dict())
    ema.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    state["step"] = 0
    print(f"[diffusers] {ips:.0f} img/s calibrated -> {steps} steps", file=sys.stderr)
    trained, start, loss = 0.0, time.perf_counter(), float("nan")
    while state["step"] < steps and trained < args.minutes * 60:
        t0 = time.perf_counter()
        loss = step()
        trained += time.perf_counter() - t0
        if state["step"] % 100 == 0:
            print(f"[diffusers] step {state['step']}/{steps} loss {loss:.4f}", file=sys.stderr)
    check_finite("the baseline's loss", loss)
    from safetensors.torch import save_file

    out = args.out / "diffusers-baseline"
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(out / "ema.safetensors"))
    return {"arm": "diffusers UNet2DModel", "parameters": count_parameters(model), "steps": state["step"],
            "img_per_s": state["step"] * args.batch_size / max(trained, 1e-9),
            "train_wall_s": time.perf_counter() - start, "pipe": baseline_pipeline(ema)}  # fmt: skip


def evaluate_arm(arm: dict[str, Any], args: argparse.Namespace, data_dir: str | None) -> dict[str, Any]:
    from tinydiff.evaluate import evaluate_pipeline

    report = evaluate_pipeline(arm.pop("pipe"), num_per_digit=args.num_per_digit, sampler=args.sampler,
                               steps=args.steps, guidance=args.guidance, data_dir=data_dir)  # fmt: skip
    for key in ("accuracy", "mnist_fd", "mnist_fd_floor", "fd_ratio"):
        check_finite(f"{arm['arm']} {key}", report.get(key))
    arm.update({k: report[k] for k in ("accuracy", "min_digit_accuracy", "mnist_fd", "mnist_fd_floor", "fd_ratio",
                                       "nfe", "guidance", "num_images") if k in report})  # fmt: skip
    return arm


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"CPU time to quality: {args.minutes:g} min of training each, {args.sampler} {args.steps} steps")
    for col in ("arm", "params", "img/s", "steps", "prompt acc.", "worst digit", "MNIST-FD", "x floor", "NFE"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for r in rows:
        table.add_row(r["arm"], f"{r['parameters'] / 1e6:.2f}M", f"{r['img_per_s']:.0f}", str(r["steps"]),
                      f"{r['accuracy']:.1%}", f"{r.get('min_digit_accuracy', float('nan')):.1%}",
                      f"{r['mnist_fd']:.2f}", f"{r['fd_ratio']:.2f}", str(r["nfe"]))  # fmt: skip
    Console(width=140).print(table)
    if len(rows) == 2:
        print(f"throughput ratio (TinyDiff / diffusers): {rows[0]['img_per_s'] / rows[1]['img_per_s']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = set(arms) - {"tinydiff", "diffusers"}
    if unknown or not arms:
        fail(f"--arms takes tinydiff and/or diffusers, got {args.arms!r}")
    if "diffusers" in arms:
        require_diffusers()
    data_dir = os.environ.get("TINYDIFF_DATA_DIR")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in arms:
        arm = run_tinydiff(args, data_dir) if name == "tinydiff" else run_diffusers(args, data_dir)
        rows.append(evaluate_arm(arm, args, data_dir))
    print_table(rows, args)
    write_json(args.out / "results.json", {"benchmark": "cpu_time_to_quality", "date": time.strftime("%Y-%m-%d"),
               "machine": machine(), "command": " ".join(sys.argv), "minutes": args.minutes,
               "sampler": args.sampler, "steps": args.steps, "rows": rows})  # fmt: skip
    print(f"results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
