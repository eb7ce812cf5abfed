"""The milestone story, reproduced: stage1 to stage4 under the same training budget, each scored.

    python benchmarks/milestone_story.py                      # 3 minutes of training per stage
    python benchmarks/milestone_story.py --minutes 10 --out runs/milestones
    python benchmarks/milestone_story.py --smoke              # seconds: checks the plumbing

Runs ``tinydiff train --config stageN.toml --max-minutes M`` for each stage (the preset with
a short warm-up; the same wall-clock budget and batch; the learning-rate schedule spans
``--steps``), then ``tinydiff eval`` (MNIST-FD beside
its floor and the class histogram; prompt accuracy for the text stage), copies each run's
``evolution.png`` and final snapshot to ``--images``, and prints a Markdown table for
``docs/milestone-1.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fail, write_json  # noqa: E402

STAGES = {
    "stage1": "bare UNet, linear schedule",
    "stage2": "+ sinusoidal timestep embeddings",
    "stage3": "+ down/up-sampling, attention at 7x7",
    "stage4": "+ text encoder, cross-attention (text-to-image)",
}


def tinydiff(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "tinydiff", *args], capture_output=capture, text=True)
    if done.returncode != 0:
        fail(f"tinydiff {' '.join(args[:3])} ... exited with status {done.returncode}: {(done.stderr or '')[-300:]}")
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=3.0, help="training budget per stage")
    p.add_argument("--steps", type=int, default=1000, help="the learning-rate schedule's length (a cap)")
    p.add_argument("--num-per-digit", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16, help="small, so even the slow stages take some steps")
    p.add_argument("--warmup", type=int, default=20, help="warm-up steps (the presets' 200 would outlast a short budget)")
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--out", type=Path, default=Path("runs/milestones"))
    p.add_argument("--images", type=Path, default=None, help="copy evolution.png and the last snapshot here")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    extra: list[str] = []
    if args.smoke:
        args.minutes, args.steps, args.num_per_digit = 0.01, 4, 2
        args.batch_size, args.warmup = 4, 1
        extra = ["--sample-every", "2"]
    rows = []
    for stage in [s for s in args.stages.split(",") if s]:
        if stage not in STAGES:
            fail(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
        run = args.out / stage
        if run.exists():
            fail(f"{run} already exists; remove it or choose another --out")
        toml = args.out / f"{stage}.toml"
        toml.parent.mkdir(parents=True, exist_ok=True)
        toml.write_text(f'preset = "{stage}"\n[train]\nwarmup_steps = {args.warmup}\n', encoding="utf-8")
        command = ["train", "--config", str(toml), "--run-dir", str(run), "--max-minutes", str(args.minutes),
                   "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--device", "cpu", *extra]  # fmt: skip
        tinydiff(*command)
        ev = ["eval", "--model", str(run), "--num-per-digit", str(args.num_per_digit), "--sampler", "ddim",
              "--steps", "2" if args.smoke else "20", "--device", "cpu", "--json"]  # fmt: skip
        report = json.loads(tinydiff(*ev, capture=True).stdout)
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        row = {"stage": stage, "what": STAGES[stage], "steps": metrics[-1]["step"], "loss": metrics[-1]["loss"],
               "img_per_s": sum(m["img_per_s"] for m in metrics) / len(metrics), "mnist_fd": report["mnist_fd"],
               "fd_ratio": report["fd_ratio"], "accuracy": report.get("accuracy"),
               "class_histogram": report["class_histogram"], "train_command": "tinydiff " + " ".join(command),
               "eval_command": "tinydiff " + " ".join(ev)}  # fmt: skip
        rows.append(row)
        if args.images:
            args.images.mkdir(parents=True, exist_ok=True)
            shutil.copy(run / "evolution.png", args.images / f"{stage}-evolution.png")
            last = sorted((run / "samples").glob("step-*.png"))[-1]
            shutil.copy(last, args.images / f"{stage}-final.png")
    write_json(args.out / "milestones.json", {"minutes": args.minutes, "rows": rows})
    print("| stage | what it adds | steps in budget | img/s | final loss | MNIST-FD (x floor) | prompt accuracy | class histogram |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        acc = f"{r['accuracy']:.1%}" if r["accuracy"] is not None else "n/a"
        print(f"| `{r['stage']}` | {r['what']} | {r['steps']} | {r['img_per_s']:.0f} | {r['loss']:.3f} | "
              f"{r['mnist_fd']:.1f} ({r['fd_ratio']:.1f}x) | {acc} | {' '.join(map(str, r['class_histogram']))} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
