"""What a whole number costs: sampling one k-digit number against one single digit, timed in the same run.

    python benchmarks/number_canvas.py                       # the bundled model, its defaults, k = 1, 2, 4, 6, 8
    python benchmarks/number_canvas.py --repeats 10 --batch 16
    python benchmarks/number_canvas.py --smoke               # seconds: checks the plumbing

A number of k digits runs the network on k windows a step, batched into one call
(MultiDiffusion, Bar-Tal et al. 2023), so its cost against a single digit depends on how
much of the machine one image leaves idle: at ``--batch 1`` (one picture, what
``tinydiff sample "the year 2026" --num 1`` does) the k windows fill an otherwise idle
network call; at a large batch the machine is busy and k windows cost close to k digits.
Each figure is the median of ``--repeats`` timings, interleaved so that a shared machine's
load falls on every arm alike; the ratios are what to compare. Beside the wall-clock time,
the process's CPU time (all its threads): on a machine shared with other jobs it moves far
less than the wall clock does. Writes ``results.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import check_finite, machine, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="run directory, model folder or bundled model (default: bundled)")
    parser.add_argument("--lengths", default="1,2,4,6,8", help="number lengths to time, comma-separated (1: a single digit)")
    parser.add_argument("--batch", type=int, default=1, help="images per sample call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the pipeline's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmark-results/number_canvas")
    parser.add_argument("--smoke", action="store_true", help="1 repeat, 1 step, lengths 1,2: checks the plumbing")
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.steps, args.lengths = 1, 1, "1,2"
    import torch

    from tinydiff.pipeline import Pipeline

    lengths = [int(k) for k in args.lengths.split(",")]
    if 1 not in lengths:
        lengths.insert(0, 1)
    pipe = Pipeline.from_ref(args.model, device="cpu")
    prompts = {k: "the number " + "".join(str((3 * j + 2) % 10) for j in range(k)) for k in lengths}
    pipe.sample(args.batch, prompts=prompts[max(lengths)], seed=args.seed, steps=args.steps)  # warm-up
    times: dict[int, list[float]] = {k: [] for k in lengths}
    cpu_times: dict[int, list[float]] = {k: [] for k in lengths}
    for r in range(args.repeats):
        for k in lengths:  # interleaved: a load spike on the shared machine hits every length alike
            start, cpu_start = time.perf_counter(), time.process_time()
            pipe.sample(args.batch, prompts=prompts[k], seed=args.seed + r, steps=args.steps)
            times[k].append(time.perf_counter() - start)
            cpu_times[k].append(time.process_time() - cpu_start)
    single, single_cpu = statistics.median(times[1]), statistics.median(cpu_times[1])
    rows: list[dict[str, Any]] = []
    print(f"{machine()}, {torch.get_num_threads()} threads; batch {args.batch}, median of {args.repeats}")
    print(f"{'digits':>6} {'seconds':>8} {'vs 1 digit':>11} {'vs k digits':>12} {'CPU s':>8} {'CPU vs 1 digit':>15}")
    for k in lengths:
        seconds, cpu = statistics.median(times[k]), statistics.median(cpu_times[k])
        row = {"digits": k, "prompt": prompts[k], "seconds": seconds, "vs_single_digit": check_finite("ratio", seconds / single),
               "vs_k_single_digits": seconds / (k * single), "cpu_seconds": cpu,
               "cpu_vs_single_digit": cpu / max(single_cpu, 1e-9)}  # fmt: skip
        rows.append(row)
        print(f"{k:>6} {seconds:>8.3f} {row['vs_single_digit']:>10.2f}x {row['vs_k_single_digits']:>11.2f}x "
              f"{cpu:>8.3f} {row['cpu_vs_single_digit']:>14.2f}x")  # fmt: skip
    write_json(Path(args.out) / "results.json", {"machine": machine(), "batch": args.batch, "repeats": args.repeats,
                                                 "steps": args.steps, "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
