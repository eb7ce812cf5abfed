"""The run directory: resolved config, metrics, sample snapshots and the evolution sheet.

    runs/<name>/
      config.json      resolved config, command line, versions, git commit if any
      metrics.jsonl    one JSON object per logged step (the ``jsonl`` tracker; others add theirs)
      checkpoints/     step-NNNNNN/ model folders (+ training_state.safetensors)
      samples/         step-NNNNNN.png, the same seeds every time
      evolution.png    the snapshots side by side
      eval.json        the latest full evaluation, when a sweep made one
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import __version__
from .checkpoint import is_model_folder
from .files import parse_step_name, step_name, write_json
from .images import decode_png, evolution_sheet, make_grid, save_png
from .trackers import METRICS, RunTrackers, read_metrics

RUN_CONFIG = "config.json"
EVAL = "eval.json"
__all__ = ["EVAL", "METRICS", "RUN_CONFIG", "RunTracker", "find_runs", "is_run_dir", "list_snapshots", "read_metrics"]


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
    """Writes one run directory and feeds its trackers; only the process that logs (rank 0) should make one.

    ``trackers`` names the trackers beside ``metrics.jsonl``; an unknown or unusable one is refused here,
    before anything is written.
    """

    def __init__(self, run_dir: str | Path, *, trackers: Sequence[str] = ()) -> None:
        self.dir = Path(run_dir)
        self.samples_dir = self.dir / "samples"
        self.checkpoints_dir = self.dir / "checkpoints"
        self.trackers = RunTrackers(trackers)

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
        self.trackers.start(self.dir, config, resumed_from=resumed_from)

    def log(self, metrics: dict[str, Any]) -> None:
        """One metrics line, to every tracker (``metrics.jsonl`` first)."""
        self.trackers.log(metrics)

    def save_snapshot(self, step: int, images: np.ndarray) -> Path:
        """Write uint8 ``[N, H, W]`` samples as ``samples/step-NNNNNN.png``, redraw the evolution sheet, tell the trackers."""
        path = self.samples_dir / f"{step_name(step)}.png"
        grid = make_grid(images)
        save_png(path, grid)
        self.update_evolution()
        self.trackers.log_image(step, "samples", grid)
        return path

    def finish(self) -> None:
        """The run ended: the trackers flush and close."""
        self.trackers.finish()

    def update_evolution(self) -> None:
        snapshots = [(step, decode_png(p.read_bytes())) for step, p in list_snapshots(self.dir)]
        if snapshots:
            save_png(self.dir / "evolution.png", evolution_sheet(snapshots))


def list_snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    folder = Path(run_dir) / "samples"
    if not folder.is_dir():
        return []
    found = [(step, p) for p in folder.iterdir() if p.suffix == ".png" and (step := parse_step_name(p.stem)) is not None]
    return sorted(found)


def is_run_dir(path: str | Path) -> bool:
    """A run directory: a folder, not a model folder, with the run's ``config.json`` or a ``checkpoints/`` folder."""
    path = Path(path)
    has_run_files = (path / RUN_CONFIG).is_file() or (path / "checkpoints").is_dir()
    return path.is_dir() and not is_model_folder(path) and has_run_files


def find_runs(folder: str | Path, *, depth: int = 2) -> list[Path]:
    """Run directories in ``folder`` (a folder of runs, such as ``runs/`` or a sweep), and in its subfolders to ``depth``."""
    folder = Path(folder)
    if is_run_dir(folder):
        return [folder]
    if depth == 0 or not folder.is_dir():
        return []
    return [run for child in sorted(folder.iterdir()) if child.is_dir() for run in find_runs(child, depth=depth - 1)]
