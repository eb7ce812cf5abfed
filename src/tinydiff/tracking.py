"""The run directory: resolved config, metrics, sample snapshots and the evolution sheet.

    runs/<name>/
      config.json      resolved config, command line, versions, git commit if any
      metrics.jsonl    one JSON object per logged step
      checkpoints/     step-NNNNNN/ model folders (+ training_state.safetensors)
      samples/         step-NNNNNN.png, the same seeds every time
      evolution.png    the snapshots side by side
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .files import parse_step_name, step_name, write_atomic, write_json
from .images import decode_png, evolution_sheet, make_grid, save_png

RUN_CONFIG = "config.json"
METRICS = "metrics.jsonl"


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the working directory's git checkout, if there is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def versions() -> dict[str, str]:
    import torch

    return {"tinydiff": __version__, "torch": torch.__version__, "python": platform.python_version()}


class RunTracker:
    """Writes one run directory; only the process that logs (rank 0) should make one."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.samples_dir = self.dir / "samples"
        self.checkpoints_dir = self.dir / "checkpoints"

    def start(self, config: dict[str, Any], *, command: list[str] | None = None, resumed_from: int | None = None) -> None:
        """Create the folders and write ``config.json`` (kept from the first start when resuming)."""
        for d in (self.dir, self.samples_dir, self.checkpoints_dir):
            d.mkdir(parents=True, exist_ok=True)
        record = {
            "config": config,
            "command": command if command is not None else sys.argv,
            "versions": versions(),
            "git_commit": git_commit(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        path = self.dir / RUN_CONFIG
        if resumed_from is not None and path.is_file():
            previous = json.loads(path.read_text(encoding="utf-8"))
            previous["config"] = config
            previous.setdefault("resumes", []).append({"step": resumed_from, **{k: record[k] for k in ("command", "started")}})
            record = previous
        write_json(path, record)

    def log(self, metrics: dict[str, Any]) -> None:
        with open(self.dir / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")

    def truncate_metrics(self, step: int) -> None:
        """Drop lines logged after ``step``: a resumed run continues from its checkpoint, not from where it died."""
        kept = [m for m in read_metrics(self.dir) if m.get("step", 0) <= step]
        write_atomic(self.dir / METRICS, "".join(json.dumps(m) + "\n" for m in kept).encode())

    def save_snapshot(self, step: int, images: np.ndarray) -> Path:
        """Write uint8 ``[N, H, W]`` samples as ``samples/step-NNNNNN.png`` and redraw the evolution sheet."""
        path = self.samples_dir / f"{step_name(step)}.png"
        save_png(path, make_grid(images))
        self.update_evolution()
        return path

    def update_evolution(self) -> None:
        snapshots = [(step, decode_png(p.read_bytes())) for step, p in list_snapshots(self.dir)]
        if snapshots:
            save_png(self.dir / "evolution.png", evolution_sheet(snapshots))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return out


def list_snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    folder = Path(run_dir) / "samples"
    if not folder.is_dir():
        return []
    found = [(step, p) for p in folder.iterdir() if p.suffix == ".png" and (step := parse_step_name(p.stem)) is not None]
    return sorted(found)
