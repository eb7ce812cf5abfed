"""Quality against the number of network evaluations, per sampler, beside 1000-step DDPM.

    python benchmarks/quality_vs_steps.py                      # the bundled model, 20 images per digit
    python benchmarks/quality_vs_steps.py --model runs/x --num-per-digit 50 --steps 5,10,20,50
    python benchmarks/quality_vs_steps.py --smoke              # seconds: checks the plumbing
    python benchmarks/quality_vs_steps.py --samplers dpm++ --steps 10,20 --spacings uniform,logsnr,karras,trailing \
        --num-per-digit 100 --no-reference                     # the timestep grids at N = 1,000

For each sampler and step count, ``tinydiff eval``'s figures (prompt accuracy, the worst digit,
MNIST-FD and its ratio to the real-versus-real floor at the same N) from the same seeds,
then the reference, ancestral DDPM over all T steps. ``--spacings`` repeats every row for each
timestep grid (``tinydiff sample --spacing``). Prints a table, checks the target
(at 20 evaluations: within 1 point of the reference's prompt accuracy and 10% of its
MNIST-FD), and writes ``results.json`` and ``quality_vs_steps.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import check_finite, fail, machine, write_json  # noqa: E402


def evaluate(pipe: Any, sampler: str, steps: int | None, args: argparse.Namespace, spacing: str | None = None) -> dict[str, Any]:
    from tinydiff.evaluate import evaluate_pipeline

    report = evaluate_pipeline(pipe, num_per_digit=args.num_per_digit, sampler=sampler, steps=steps,
                               guidance=args.guidance, guidance_interval=args.interval, spacing=spacing, seed=args.seed)  # fmt: skip
    check_finite(f"{sampler} {steps} MNIST-FD", report["mnist_fd"])
    report["label"] = sampler if spacing is None else f"{sampler} {spacing}"
    keys = ("label", "sampler", "steps", "spacing", "nfe", "accuracy", "min_digit_accuracy", "mnist_fd", "mnist_fd_floor", "fd_ratio", "seconds", "guidance",
            "guidance_interval")  # fmt: skip
    return {k: report.get(k) for k in keys}


def plot(rows: list[dict[str, Any]], reference: dict[str, Any] | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for sampler in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == sampler]
        nfe = [r["nfe"] for r in mine]
        if mine[0].get("accuracy") is not None:
            ax1.plot(nfe, [100 * r["accuracy"] for r in mine], marker="o", label=sampler)
        ax2.plot(nfe, [r["fd_ratio"] for r in mine], marker="o", label=sampler)
    if reference is not None and reference.get("accuracy") is not None:
        ax1.axhline(100 * reference["accuracy"], color="gray", linestyle="--", label=f"ddpm {reference['nfe']} steps")
    if reference is not None:
        ax2.axhline(reference["fd_ratio"], color="gray", linestyle="--", label=f"ddpm {reference['nfe']} steps")
    ax2.axhline(1.0, color="black", linewidth=0.8, linestyle=":", label="real data (floor)")
    for ax, ylabel in ((ax1, "prompt accuracy (%)"), (ax2, "MNIST-FD / floor")):
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations per image")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model reference (default: the bundled model)")
    p.add_argument("--samplers", default="ddpm,ddim,dpm++")
    p.add_argument("--steps", default="5,10,20,50", help="comma-separated step counts")
    p.add_argument("--spacings", default=None, help="comma-separated timestep grids: uniform, trailing, logsnr, karras "
                   "(default: each sampler's own)")
    p.add_argument("--reference-steps", type=int, default=None, help="DDPM steps of the reference (default: all T)")
    p.add_argument("--no-reference", action="store_true", help="skip the DDPM reference (all T steps: slow at large N)")
    p.add_argument("--num-per-digit", type=int, default=20)
    p.add_argument("--guidance", type=float, default=None, help="default: TinyDiff's")
    p.add_argument("--guidance-interval", default=None, help="LO,HI or 'all' (default: TinyDiff's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/quality_vs_steps"))
    p.add_argument("--smoke", action="store_true", help="two images per digit, 2 and 3 steps, a 4-step reference")
    args = p.parse_args(argv)
    if args.smoke:
        args.num_per_digit, args.steps, args.reference_steps = 2, "2,3", 4
    try:
        steps = [int(s) for s in args.steps.split(",") if s.strip()]
    except ValueError:
        fail(f"--steps takes comma-separated integers, got {args.steps!r}")
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    spacings: list[str | None] = [s.strip() for s in args.spacings.split(",") if s.strip()] if args.spacings else [None]

    from tinydiff.config import parse_guidance_interval
    from tinydiff.errors import TinyDiffError
    from tinydiff.pipeline import Pipeline

    try:
        args.interval = parse_guidance_interval(args.guidance_interval)
    except TinyDiffError as exc:
        fail(str(exc))

    pipe = Pipeline.from_ref(args.model, device="cpu")
    resolved = pipe.options(guidance=args.guidance, guidance_interval=args.interval)
    args.guidance, args.interval = resolved.guidance, resolved.guidance_interval or "all"
    try:
        for sampler in samplers:
            for spacing in spacings:
                pipe.options(sampler=sampler, spacing=spacing)
    except TinyDiffError as exc:
        fail(str(exc))
    rows = []
    for sampler in samplers:
        for spacing in spacings:
            for n in steps:
                print(f"[quality_vs_steps] {sampler} {n} steps, {spacing or 'its own'} spacing ...", file=sys.stderr)
                rows.append(evaluate(pipe, sampler, n, args, spacing))
    reference = None
    if not args.no_reference:
        print(f"[quality_vs_steps] reference: ddpm {args.reference_steps or 'all'} steps ...", file=sys.stderr)
        reference = evaluate(pipe, "ddpm", args.reference_steps, args)

    print(f"\nmodel {pipe.path}, {10 * args.num_per_digit} images per row, guidance {args.guidance:g} "
          f"({'every step' if args.interval == 'all' else 'at sigma in (%g, %g]' % args.interval})")
    print(f"{'sampler':16s} {'NFE':>5s} {'accuracy':>9s} {'worst':>6s} {'MNIST-FD':>9s} {'x floor':>8s} {'vs ref FD':>9s} {'s':>6s}")
    for r in [*rows, *([{**reference, "label": "ddpm*"}] if reference is not None else [])]:
        acc = f"{r['accuracy']:.1%}" if r["accuracy"] is not None else "n/a"
        worst = f"{r['min_digit_accuracy']:.0%}" if r["min_digit_accuracy"] is not None else "n/a"
        vs_ref = f"{r['mnist_fd'] / reference['mnist_fd']:9.2f}" if reference is not None else f"{'n/a':>9s}"
        print(f"{r['label']:16s} {r['nfe']:5d} {acc:>9s} {worst:>6s} {r['mnist_fd']:9.2f} {r['fd_ratio']:8.2f} "
              f"{vs_ref} {r['seconds']:6.1f}")  # fmt: skip
    if reference is not None:
        print("(ddpm*: the reference)")
    target = []
    for r in rows if reference is not None else []:
        if r["nfe"] == 20:
            acc_ok = r["accuracy"] is None or r["accuracy"] >= reference["accuracy"] - 0.01
            fd_ok = r["mnist_fd"] <= 1.10 * reference["mnist_fd"]
            target.append({"sampler": r["label"], "accuracy_within_1_point": acc_ok, "fd_within_10_percent": fd_ok})
            print(f"target at 20 NFE, {r['label']}: accuracy within 1 point {'met' if acc_ok else 'MISSED'}, "
                  f"MNIST-FD within 10% {'met' if fd_ok else 'MISSED'}")  # fmt: skip
    png = args.out / "quality_vs_steps.png"
    plot(rows, reference, png, f"{pipe.path.name if pipe.path else 'model'}: {10 * args.num_per_digit} images per point")
    write_json(args.out / "results.json", {"benchmark": "quality_vs_steps", "date": time.strftime("%Y-%m-%d"),
               "machine": machine(), "command": " ".join(sys.argv), "model": str(pipe.path),
               "num_per_digit": args.num_per_digit, "rows": rows, "reference": reference, "target_20_nfe": target})  # fmt: skip
    print(f"results: {args.out / 'results.json'}, plot: {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
