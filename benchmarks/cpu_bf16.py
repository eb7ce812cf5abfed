"""Training images/s on the CPU with bf16 autocast (``train.cpu_bf16``) against fp32, per preset shape.

    python benchmarks/cpu_bf16.py                         # stage1, stage3, stage4 and laptop at batch 64
    python benchmarks/cpu_bf16.py --presets laptop --steps 20
    python benchmarks/cpu_bf16.py --smoke                 # seconds: checks the plumbing

Each row times the same training step as ``tinydiff train`` (``Trainer.train_step``: a batch
of MNIST, the loss, AdamW, the EMA), fp32 and then bf16, in one process, after warm-up
steps, and prints the ratio. Whether bf16 pays depends on the processor: with bf16 matrix
units (Intel AMX, ``amx_tile`` in /proc/cpuinfo) it is faster, without them usually slower.
The quality check is a training run each way (docs/performance.md#bf16-on-the-cpu).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import check_finite, machine, write_json  # noqa: E402


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def images_per_s(preset: str, bf16: bool, steps: int, warmup: int, batch: int, tiny: bool, data_dir: str | None) -> float:
    from tinydiff.config import resolve_config
    from tinydiff.train import Trainer

    train = {"cpu_bf16": bf16, "batch_size": batch, "device": "cpu", "steps": warmup + steps, "data_dir": data_dir}
    overrides: dict[str, Any] = {"train": train}
    if tiny:
        overrides["model"] = {"base_channels": 8, "num_res_blocks": 1, "groups": 4}
    with tempfile.TemporaryDirectory() as run_dir:  # MNIST as tinydiff train reads it
        trainer = Trainer(resolve_config(preset, None, overrides), Path(run_dir))
        for _ in range(warmup):
            trainer.train_step()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        return batch * steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", default="stage1,stage3,stage4,laptop")
    p.add_argument("--steps", type=int, default=10, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: $TINYDIFF_DATA_DIR)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_bf16"))
    p.add_argument("--smoke", action="store_true", help="a tiny network, two timed steps")
    args = p.parse_args(argv)
    tiny = args.smoke
    if args.smoke:
        args.presets, args.steps, args.warmup, args.batch_size = "stage3", 2, 1, 8
    flags = cpu_flags()
    amx = "amx_bf16" in flags or "amx_tile" in flags
    print(f"{machine()}; AMX {'yes' if amx else 'no'}, "
          f"AVX-512 BF16 {'yes' if 'avx512_bf16' in flags else 'no'}")
    rows = []
    print(f"{'preset':8s} {'fp32 img/s':>11s} {'bf16 img/s':>11s} {'ratio':>7s}")
    for preset in [s.strip() for s in args.presets.split(",") if s.strip()]:
        fp32 = images_per_s(preset, False, args.steps, args.warmup, args.batch_size, tiny, args.data_dir)
        bf16 = images_per_s(preset, True, args.steps, args.warmup, args.batch_size, tiny, args.data_dir)
        check_finite(f"{preset} images/s", fp32 + bf16)
        rows.append({"preset": preset, "fp32_images_per_s": fp32, "bf16_images_per_s": bf16, "ratio": bf16 / fp32})
        print(f"{preset:8s} {fp32:11.1f} {bf16:11.1f} {bf16 / fp32:6.2f}x", flush=True)
    write_json(args.out / "results.json", {"benchmark": "cpu_bf16", "date": time.strftime("%Y-%m-%d"), "machine": machine(),
                                           "amx": amx, "command": " ".join(sys.argv), "batch_size": args.batch_size,
                                           "rows": rows})  # fmt: skip
    print(f"results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
