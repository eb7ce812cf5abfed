"""Make the bundled model: a trained run's newest checkpoint, in fp16, measured, inside the package.

    python benchmarks/bundle_model.py runs/laptop                     # -> src/tinydiff/models/tinydiff-mnist
    python benchmarks/bundle_model.py runs/laptop --num-per-digit 100 --machine "2-core CPU"

Converts the EMA weights to fp16 (halving the size; loading casts them back to float32),
then measures the fp16 model with ``tinydiff eval``'s code at the default sampler, steps,
guidance and guidance interval (prompt accuracy per digit, MNIST-FD beside its floor, style
words) and writes the figures, the command, the machine and the training run's command and
wall time into the folder's ``config.json`` (``training`` and ``evaluation``). Prints the
JSON it recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def training_record(run_dir: Path) -> dict:
    """What the run's own files say about how it was trained: command, steps, training time."""
    record = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    seconds = 0.0
    previous = 0
    for m in metrics:  # images / (images per second) per logged interval = training seconds
        seconds += (m["step"] - previous) * record["config"]["train"]["batch_size"] / max(m["img_per_s"], 1e-9)
        previous = m["step"]
    return {"command": " ".join(record.get("command", [])), "versions": record.get("versions"),
            "git_commit": record.get("git_commit"), "training_seconds": round(seconds, 1),
            "last_loss": metrics[-1]["loss"] if metrics else None}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="run directory (its newest checkpoint) or model folder")
    p.add_argument("--name", default="tinydiff-mnist")
    p.add_argument("--dest", type=Path, default=REPO / "src" / "tinydiff" / "models")
    p.add_argument("--num-per-digit", type=int, default=100)
    p.add_argument("--machine", default=None, help="how to describe the training machine (default: this one)")
    args = p.parse_args(argv)

    from tinydiff.checkpoint import load_model_folder, resolve_model_ref, save_model_folder
    from tinydiff.evaluate import evaluate_pipeline, style_report
    from tinydiff.pipeline import Pipeline

    folder = resolve_model_ref(str(args.run))
    config, model = load_model_folder(folder)
    run_dir = folder.parent.parent if folder.parent.name == "checkpoints" else None
    weights = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    config.training = {**config.training, **(training_record(run_dir) if run_dir else {}),
                       "machine": args.machine or machine()}  # fmt: skip
    target = args.dest / args.name
    save_model_folder(target, config, weights, getattr(model.text_encoder, "tokenizer", None))

    pipe = Pipeline.from_ref(str(target), device="cpu")
    start = time.perf_counter()
    report = evaluate_pipeline(pipe, num_per_digit=args.num_per_digit)  # the defaults, as `tinydiff eval` uses them
    # as `tinydiff eval --style` does it: half as many images per digit for each style prompt
    style = style_report(pipe, num_per_digit=max(1, args.num_per_digit // 2))
    keep = ("sampler", "steps", "nfe", "guidance", "guidance_interval", "num_images", "accuracy", "min_digit_accuracy", "per_digit_accuracy",
            "mnist_fd", "mnist_fd_floor", "fd_ratio", "seconds")  # fmt: skip
    evaluation = {k: report[k] for k in keep if k in report}
    evaluation.update({
        "style": style, "date": time.strftime("%Y-%m-%d"), "machine": machine(),
        "command": f"tinydiff eval --model {args.name} --num-per-digit {args.num_per_digit} --style",
        "weights": "float16", "eval_wall_s": round(time.perf_counter() - start, 1),
        "quality_bar": {"accuracy_every_digit_at_least_98": report["min_digit_accuracy"] >= 0.98,
                        "fd_within_2x_floor": report["fd_ratio"] <= 2.0,
                        "bold_thicker_than_thin": style["bold_thin_ink_ratio"] > 1.0,
                        "slants_opposite": style["slant_right"] > 0 > style["slant_left"]},
    })  # fmt: skip
    config.evaluation = evaluation
    save_model_folder(target, config, weights, getattr(model.text_encoder, "tokenizer", None))
    size = sum(f.stat().st_size for f in target.iterdir())
    print(json.dumps({"folder": str(target), "bytes": size, "training": config.training, "evaluation": evaluation}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
