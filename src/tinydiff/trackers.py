"""Trackers: where a run's metrics, snapshots and config go, each one a plugin.

The training loop hands every metrics line and snapshot grid to the run's trackers.
``jsonl`` writes the run directory's own ``metrics.jsonl`` (what ``--resume``,
``tinydiff inspect`` and ``tinydiff compare`` read) and is always on; ``csv`` and
``tensorboard`` are built-ins a run adds with ``train.trackers`` (``--tracker NAME``),
and a plugin adds more through ``tinydiff_register_trackers``. A tracker that raises
during the run becomes one :class:`TrackerWarning` and is switched off: training goes
on, and the other trackers lose nothing.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import flat_config
from .errors import TinyDiffError
from .files import write_atomic
from .hookspecs import hookimpl

METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
RECORD = "jsonl"  # the run directory's own record: always on, and its failure is the run's


class TrackerWarning(UserWarning):
    """A tracker failed during a run and was switched off; training went on."""


class Tracker:
    """What a tracker may implement; each method is a no-op here, so a tracker overrides only what it needs."""

    def start(self, run_dir: Path, config: dict[str, Any], *, resumed_from: int | None) -> None:
        """The run starts (``resumed_from=None``) or resumes from the checkpoint at step ``resumed_from``."""

    def log(self, metrics: dict[str, Any]) -> None:
        """One metrics line: ``step``, ``loss``, ``grad_norm``, ``lr``, ``img_per_s``, ``epoch``, ``seconds``, ``eval_*``."""

    def log_image(self, step: int, name: str, image: np.ndarray) -> None:
        """A uint8 ``[H, W]`` image (0 = black), such as the snapshot grid of ``step``."""

    def finish(self) -> None:
        """The run ended: flush and close."""


def read_metrics(run_dir: str | Path, *, strict: bool = False) -> list[dict[str, Any]]:
    """The JSON objects of a run's ``metrics.jsonl``; a line cut short by a crash (the last) is skipped.

    Other lines that are not JSON objects in UTF-8 (an edited or foreign file) are skipped too, or
    with ``strict`` (``tinydiff inspect``) are an error naming the line.
    """
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    out = []
    lines = path.read_bytes().splitlines()
    for number, raw in enumerate(lines, 1):
        problem = None
        try:
            value = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            problem = "is not UTF-8 text"
        except (json.JSONDecodeError, RecursionError):
            problem = None if number == len(lines) else "is not valid JSON"  # the last line may be cut short by a crash
            value = None
        else:
            if not isinstance(value, dict):
                problem = f"is a JSON {type(value).__name__}, not an object"
            elif "eval_mnist_fd" in value and not all(isinstance(value.get(k), (int, float)) for k in ("step", "eval_mnist_fd", "eval_fd_ratio")):
                problem = "holds eval figures without a numeric 'step', 'eval_mnist_fd' and 'eval_fd_ratio'"
        if problem is not None and strict:
            raise TinyDiffError(f"{path}, line {number} {problem}; the file was edited or is not TinyDiff's (remove that line)")
        if problem is None and isinstance(value, dict):
            out.append(value)
    return out


class JsonlTracker(Tracker):
    """``metrics.jsonl``: one JSON object a line, appended; on resume, lines after the checkpoint are dropped."""

    def start(self, run_dir: Path, config: dict[str, Any], *, resumed_from: int | None) -> None:
        self.path = Path(run_dir) / METRICS
        if resumed_from is not None:  # a resumed run continues from its checkpoint, not from where it died
            kept = [m for m in read_metrics(run_dir) if m.get("step", 0) <= resumed_from]
            write_atomic(self.path, "".join(json.dumps(m) + "\n" for m in kept).encode())

    def log(self, metrics: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")


class CsvTracker(Tracker):
    """``metrics.csv`` for spreadsheets: a column per metric, a row per metrics line, rewritten whole each time."""

    def start(self, run_dir: Path, config: dict[str, Any], *, resumed_from: int | None) -> None:
        self.path = Path(run_dir) / METRICS_CSV
        self.rows: list[dict[str, Any]] = []
        if resumed_from is not None and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as f:
                self.rows = [row for row in csv.DictReader(f) if row.get("step") and int(row["step"]) <= resumed_from]

    def log(self, metrics: dict[str, Any]) -> None:
        self.rows.append(metrics)
        columns = list(dict.fromkeys(key for row in self.rows for key in row))  # eval columns join when first logged
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomic(self.path, out.getvalue().encode("utf-8"))


class TensorBoardTracker(Tracker):
    """TensorBoard event files in ``tensorboard/``: scalars, snapshot grids as images, the config as hyper-parameters."""

    def __init__(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TinyDiffError(
                'the tensorboard tracker needs the tensorboard package; install it with pip install "tinydiff[tensorboard]"'
            ) from None
        self._writer_cls = SummaryWriter

    def start(self, run_dir: Path, config: dict[str, Any], *, resumed_from: int | None) -> None:
        from torch.utils.tensorboard.summary import hparams

        # purge_step: TensorBoard hides what a killed run logged after the checkpoint it resumes from
        self.writer = self._writer_cls(log_dir=str(Path(run_dir) / TENSORBOARD_DIR), purge_step=resumed_from)
        shown = {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in flat_config(config).items()}
        for summary in hparams(shown, {"train/loss": 0.0, "eval/fd_ratio": 0.0}):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def log(self, metrics: dict[str, Any]) -> None:
        step = int(metrics["step"])
        for key, value in metrics.items():
            if key != "step" and isinstance(value, (int, float)):
                tag = f"eval/{key[len('eval_'):]}" if key.startswith("eval_") else f"train/{key}"
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # a killed run keeps what it logged

    def log_image(self, step: int, name: str, image: np.ndarray) -> None:
        self.writer.add_image(name, image, step, dataformats="HW")
        self.writer.flush()

    def finish(self) -> None:
        self.writer.close()


@hookimpl
def tinydiff_register_trackers(register: Any) -> None:
    register("jsonl", JsonlTracker)
    register("csv", CsvTracker)
    register("tensorboard", TensorBoardTracker)


def check_trackers(names: Sequence[str]) -> None:
    """Refuse an unknown tracker, or one that cannot work here (its package missing), before anything is written."""
    RunTrackers(names)


class RunTrackers:
    """A run's trackers: ``jsonl`` first, then the named ones; each call goes to all of them.

    A tracker other than ``jsonl`` that raises is warned about once and switched off.
    """

    def __init__(self, names: Sequence[str] = ()) -> None:
        from .plugins import get_tracker

        self.active: list[tuple[str, Tracker]] = []
        for name in dict.fromkeys([RECORD, *names]):
            factory = get_tracker(name)
            try:
                self.active.append((name, factory()))
            except TinyDiffError:
                raise
            except Exception as exc:  # a third party's tracker that cannot even be made: before training, an error
                raise TinyDiffError(f"tracker {name!r} could not be created: {type(exc).__name__}: {exc}") from None

    def _each(self, what: str, call: Any) -> None:
        for name, tracker in list(self.active):
            if name == RECORD:
                call(tracker)
                continue
            try:
                call(tracker)
            except Exception as exc:
                self.active.remove((name, tracker))
                warnings.warn(
                    f"tracker {name!r} failed {what}: {type(exc).__name__}: {exc}; it is switched off and training goes on",
                    TrackerWarning,
                    stacklevel=3,
                )

    def start(self, run_dir: Path, config: dict[str, Any], *, resumed_from: int | None) -> None:
        self._each("to start", lambda t: t.start(Path(run_dir), config, resumed_from=resumed_from))

    def log(self, metrics: dict[str, Any]) -> None:
        self._each(f"at step {metrics.get('step')}", lambda t: t.log(metrics))

    def log_image(self, step: int, name: str, image: np.ndarray) -> None:
        self._each(f"at step {step}", lambda t: t.log_image(step, name, image))

    def finish(self) -> None:
        self._each("to finish", lambda t: t.finish())
