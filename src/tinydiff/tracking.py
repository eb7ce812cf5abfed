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

import contextlib
import json
import os
import platform
import subprocess
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from . import __version__
from .checkpoint import is_model_folder
from .errors import TinyDiffError
from .files import parse_step_name, step_name, write_json
from .images import decode_png, evolution_sheet, make_grid, save_png
from .trackers import METRICS, RunTrackers, read_metrics

RUN_CONFIG = "config.json"
EVAL = "eval.json"
LOCK = ".lock"  # held (flock) by the process training the run; holds its PID
RUN_CONFIG_MAX_BYTES = 16 * 2**20  # a run's config.json is a few kB: anything near this is not one
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
            previous = read_run_record(self.dir)
            previous["config"] = config
            if not isinstance(previous.get("resumes", []), list):
                previous["resumes"] = []
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
        try:
            save_png(path, grid)
        except OSError as exc:  # a snapshot is for people: losing one must not lose the checkpoint that follows
            warnings.warn(f"could not write the snapshot {path} ({exc.strerror or exc}); training goes on")
        self.update_evolution()
        self.trackers.log_image(step, "samples", grid)
        return path

    def finish(self) -> None:
        """The run ended: the trackers flush and close."""
        self.trackers.finish()

    def update_evolution(self) -> None:
        """Redraw ``evolution.png`` from the snapshots in ``samples/``. Snapshots someone edited (re-saved as RGB,
        resized, replaced) are read as well as they can be or left out; a sheet that cannot be drawn is a warning."""
        try:
            snapshots = [(step, image) for step, p in list_snapshots(self.dir) if (image := read_snapshot(p)) is not None]
            if snapshots:
                shape = snapshots[-1][1].shape  # the newest snapshot is the one training just wrote
                kept = [(step, image) for step, image in snapshots if image.shape == shape]
                save_png(self.dir / "evolution.png", evolution_sheet(kept))
        except Exception as exc:  # noqa: BLE001 - drawing the sheet never costs the run its checkpoint
            warnings.warn(f"could not draw {self.dir / 'evolution.png'} ({exc}); training goes on")


def read_snapshot(path: Path) -> np.ndarray | None:
    """A snapshot PNG as uint8 ``[H, W]``: TinyDiff's own, or any PNG an editor made of one (through Pillow); None if neither."""
    try:
        if not path.is_file() or path.stat().st_size > 64 * 2**20:
            return None
        data = path.read_bytes()
        try:
            return decode_png(data)
        except Exception:  # not TinyDiff's 8-bit grayscale PNG
            import io

            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > 64 * 2**20:
                    return None
                return np.asarray(im.convert("L"))
    except Exception:  # noqa: BLE001 - unreadable: left out of the sheet
        return None


def read_run_record(run_dir: str | Path) -> dict[str, Any]:
    """A run's ``config.json`` (config, command, versions, resumes), checked to be what TinyDiff writes."""
    path = Path(run_dir) / RUN_CONFIG
    problem = None
    try:
        if not path.is_file():
            problem = "is not a regular file"
        elif path.stat().st_size > RUN_CONFIG_MAX_BYTES:
            problem = f"is {path.stat().st_size} bytes, far more than a run's config"
        else:
            with open(path, "rb") as f:
                raw = json.loads(f.read(RUN_CONFIG_MAX_BYTES + 1).decode("utf-8"))
            if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
                problem = "does not hold a run's config (a JSON object with a \"config\" object)"
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        problem = f"is not valid JSON ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    if problem:
        raise TinyDiffError(f"{path} {problem}; the run directory is damaged, so it cannot be resumed")
    return raw


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` while a run trains: a second process is refused, naming the first one's PID.

    An ``flock`` on the file: the system releases it when the holder exits in any way, even ``kill -9``,
    so a lock left by a killed process is stale and simply taken over. Folders made here and the lock file
    are removed again on the way out when the run wrote nothing (an error before the first step leaves
    nothing behind).
    """
    import fcntl

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise TinyDiffError(f"--run-dir {run_dir} is a file; pass a folder")
    made = []
    folder = run_dir
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TinyDiffError(f"cannot create the run directory {run_dir} ({exc.strerror or exc}); choose another --run-dir") from None
    path = run_dir / LOCK
    fd = -1
    try:
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                raise TinyDiffError(
                    f"cannot write in the run directory {run_dir} ({exc.strerror or exc}); "
                    "check its permissions or choose another --run-dir"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                fd = -1
                raise TinyDiffError(
                    f"{run_dir} is in use by another tinydiff train (process {holder}); "
                    "wait for it to finish, stop it, or choose another --run-dir"
                ) from None
            try:
                same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file as we opened it: take the new one
            fd = -1
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        if fd >= 0:
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)
        for folder in made:  # innermost first; only those still empty
            with contextlib.suppress(OSError):
                folder.rmdir()


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
