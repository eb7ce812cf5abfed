"""Record the reference figures that test_reference.py compares against.

    python tests/reference/record.py          # rewrites tests/reference/figures.json

Run it only when a change is meant to alter what a seed draws or what a training
step computes (a retrained bundled model, a new default): the figures pin
behaviour across refactors, so a restructured UNet, loss or loop that changes
one bit of an image or a loss fails the test. It writes figures.json (the losses,
the images' hashes and the machine) and images.npz (the images themselves).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

PROMPTS = ["a handwritten seven", "a bold 3 leaning right", "", "a small five"]
SAMPLERS = [("ddpm", 25), ("ddim", 20), ("dpm++", 10)]


def machine() -> str:
    """What decides whether float results can match bit for bit: the CPU's vector units and torch's version."""
    import platform

    import torch

    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    vector = ",".join(sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma")))
    return f"{platform.machine()} {vector} torch {torch.__version__}"


def images(combinations: list[str] | None = None) -> dict:
    """uint8 images of the bundled model for every sampler, with and without the guidance interval.

    ``combinations`` names the ones to draw (keys such as ``"ddim-20-g3.0-all"``); all by default.
    """
    from tinydiff.pipeline import Pipeline

    pipe = Pipeline.from_ref(device="cpu")
    out = {}
    for sampler, steps in SAMPLERS:
        for guidance, interval in ((1.5, (0.28, 5.42)), (3.0, "all")):
            key = f"{sampler}-{steps}-g{guidance}-{'all' if interval == 'all' else 'interval'}"
            if combinations is not None and key not in combinations:
                continue
            drawn = pipe.sample(len(PROMPTS), prompts=PROMPTS, seed=5, sampler=sampler, steps=steps,
                                guidance=guidance, guidance_interval=interval)
            out[key] = drawn.numpy()
    return out


def training_runs() -> dict:
    from conftest import tiny_overrides
    from tinydiff.config import resolve_config
    from tinydiff.tracking import read_metrics
    from tinydiff.train import train

    runs = {
        "stage3": resolve_config("stage3", None, tiny_overrides(steps=12, log_every=3, sample_every=100, checkpoint_every=100)),
        "text": resolve_config("laptop", None, {
            **tiny_overrides(steps=8, log_every=2, sample_every=100, checkpoint_every=100, scale_augment=0.5, channels_last=False),
            "model": {**tiny_overrides()["model"], "text": {"dim": 32, "layers": 1, "heads": 2}, "cross_attention_resolutions": [14]},
            "diffusion": {"objective": "v", "min_snr_gamma": 5.0},
        }),
    }
    out = {}
    for name, config in runs.items():
        with tempfile.TemporaryDirectory() as tmp:
            train(config, Path(tmp) / "run")
            out[name] = [{"step": m["step"], "loss": m["loss"], "grad_norm": m["grad_norm"]} for m in read_metrics(Path(tmp) / "run")]
    return out


if __name__ == "__main__":
    import numpy as np

    os.environ.setdefault("TINYDIFF_DATA_DIR", str(HERE.parents[2] / "shared" / "data" / "mnist"))
    drawn = images()
    np.savez_compressed(HERE / "images.npz", **drawn)
    import torch

    figures = {"machine": machine(), "threads": torch.get_num_threads(), "images_sha256": {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in drawn.items()},
               "training": training_runs()}
    (HERE / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
