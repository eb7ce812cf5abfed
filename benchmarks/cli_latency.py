"""Latency of the command line, start-up included, against a bare ``import torch`` measured in the same run.

    python benchmarks/cli_latency.py              # 5 repeats each, medians
    python benchmarks/cli_latency.py --smoke      # 1 repeat: checks the plumbing

Targets: ``tinydiff sample "a handwritten seven"`` with its defaults within 1.5x of
``python -c "import torch"``; ``tinydiff --version`` and ``--help`` under 0.5 s (no torch on
that path). Each command is a fresh process, as a user runs it; the sample is written to a
temporary folder. Prints a table with the ratios; exits 1 if a command fails.

A second baseline, ``import torch`` ended with ``os._exit(0)``, shows how much of the first is
the interpreter's teardown of torch, which ``tinydiff sample`` skips once its output is written
(``tinydiff.cli.output.exit_now``); it has no target and is printed for comparison only.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fail, write_json  # noqa: E402

TINYDIFF = [sys.executable, "-m", "tinydiff"]


def timed(cmd: list[str], repeats: int, cwd: Path, warmup: int = 1) -> float:
    """Median wall time of ``cmd`` over ``repeats`` fresh processes (after untimed warm-ups for the disk cache)."""
    times = []
    for i in range(repeats + warmup):
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            fail(f"{' '.join(cmd)} exited with status {done.returncode}: {done.stderr.strip()[-300:]}")
        if i >= warmup:
            times.append(elapsed)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--model", default=None, help="sample from this model instead of the bundled one")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--smoke", action="store_true", help="one repeat each")
    args = p.parse_args(argv)
    repeats, warmup = (1, 0) if args.smoke else (args.repeats, 1)
    sample = [*TINYDIFF, "sample", "a handwritten seven", "--out", "seven.png", "--device", "cpu"]
    if args.model:
        sample += ["--model", str(Path(args.model).resolve())]
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        rows = {
            "python -c 'import torch'": timed([sys.executable, "-c", "import torch"], repeats, cwd, warmup),
            "python -c 'import torch; os._exit(0)'": timed([sys.executable, "-c", "import torch, os; os._exit(0)"], repeats, cwd, warmup),
            "tinydiff sample 'a handwritten seven'": timed(sample, repeats, cwd, warmup),
            "tinydiff --version": timed([*TINYDIFF, "--version"], repeats, cwd, warmup),
            "tinydiff --help": timed([*TINYDIFF, "--help"], repeats, cwd, warmup),
        }
        if not (cwd / "seven.png").is_file():
            fail("tinydiff sample wrote no image")
    base = rows["python -c 'import torch'"]
    targets = {"tinydiff sample 'a handwritten seven'": ("x torch", 1.5), "tinydiff --version": ("s", 0.5),
               "tinydiff --help": ("s", 0.5)}  # fmt: skip
    print(f"{'command':42s} {'median s':>9s} {'x import torch':>15s}  target")
    results = []
    for name, seconds in rows.items():
        unit, limit = targets.get(name, ("", None))
        figure = seconds / base if unit == "x torch" else seconds
        verdict = "" if limit is None else f"{'<=' if unit == 'x torch' else '<'} {limit}{'x' if unit == 'x torch' else ' s'}: " + (
            "met" if figure <= limit else "MISSED")
        print(f"{name:42s} {seconds:9.2f} {seconds / base:15.2f}  {verdict}")
        results.append({"command": name, "median_s": seconds, "ratio_to_import_torch": seconds / base, "met": figure <= limit if limit else None})
    if args.out:
        write_json(args.out, {"benchmark": "cli_latency", "repeats": repeats, "rows": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
