"""Comparing runs: the config keys that differ, how each trained, and its latest evaluation (without torch).

    tinydiff compare runs/schedules                  # a sweep's folder, or any folder of runs
    tinydiff compare runs/a runs/b --json            # the same figures for scripts

A run's training time is the sum of its ``metrics.jsonl`` intervals (snapshots, checkpoints
and evaluation not counted), its images/s that time's average. Its latest evaluation is the
newer of ``eval.json`` (a sweep's full ``tinydiff eval``) and the last ``--eval-every`` line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from .checkpoint import list_checkpoints
from .config import flat_config
from .errors import TinyDiffError
from .sweep import recorded_variants
from .tracking import EVAL, RUN_CONFIG, find_runs, is_run_dir, read_metrics


def collect_runs(refs: Sequence[str | Path]) -> list[Path]:
    """Run directories from run directories and folders of runs (a sweep's in its own order), each once."""
    runs: list[Path] = []
    for ref in refs:
        path = Path(ref).expanduser()
        if not path.exists():
            raise TinyDiffError(f"{str(ref)!r} does not exist; pass run directories or a folder of runs (a sweep's --out)")
        found = [path] if is_run_dir(path) else find_runs(path)
        order = [v["name"] for v in recorded_variants(path)]  # a sweep: its variants in the sweep file's order
        found.sort(key=lambda run: order.index(run.name) if run.parent == path and run.name in order else len(order))
        if not found:
            raise TinyDiffError(f"{str(ref)!r} holds no run directory (config.json or checkpoints/); is it the right folder?")
        runs += [run for run in found if run.resolve() not in {r.resolve() for r in runs}]
    return runs


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def training_curve(metrics: list[dict[str, Any]], batch_size: int | None) -> dict[str, list[float]]:
    """Step, loss, and training seconds (of the interval, and so far) at each metrics line.

    Runs logged before metrics lines held ``seconds`` get it from ``img_per_s`` and the batch size.
    """
    curve: dict[str, list[float]] = {"step": [], "loss": [], "interval": [], "seconds": []}
    previous, total = 0, 0.0
    for m in metrics:
        if "loss" not in m or "step" not in m:
            continue
        spent = m.get("seconds")
        if spent is None:
            spent = (m["step"] - previous) * batch_size / m["img_per_s"] if batch_size and m.get("img_per_s") else 0.0
        total += spent
        previous = m["step"]
        for key, value in (("step", m["step"]), ("loss", m["loss"]), ("interval", spent), ("seconds", total)):
            curve[key].append(value)
    return curve


def latest_evaluation(run_dir: Path, metrics: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest evaluation: ``eval.json`` (a full ``tinydiff eval``) or the last ``--eval-every`` line, whichever is later."""
    during = [m for m in metrics if "eval_mnist_fd" in m]
    full = _read_json(run_dir / EVAL)
    if full and (not during or full.get("step", -1) >= during[-1]["step"]):
        keys = ("step", "accuracy", "min_digit_accuracy", "mnist_fd", "mnist_fd_floor", "fd_ratio", "confidence", "num_images")
        return {"source": EVAL, **{k: full.get(k) for k in keys}}
    if during:
        last = during[-1]
        return {"source": "metrics.jsonl", "step": last["step"], **{k[len("eval_"):]: v for k, v in last.items() if k.startswith("eval_")}}
    return None


def summarize_run(run_dir: str | Path) -> dict[str, Any]:
    """What ``compare`` shows of one run: config, progress, time, speed, loss, evaluation and their curves."""
    run_dir = Path(run_dir)
    config = _read_json(run_dir / RUN_CONFIG).get("config", {})
    metrics = read_metrics(run_dir)
    curve = training_curve(metrics, config.get("train", {}).get("batch_size"))
    seconds = curve["seconds"][-1] if curve["seconds"] else None
    rates = [(m["img_per_s"], spent) for m, spent in zip((m for m in metrics if "loss" in m and "step" in m), curve["interval"])
             if m.get("img_per_s")]  # fmt: skip
    timed = sum(spent for _, spent in rates)
    img_per_s = sum(rate * spent for rate, spent in rates) / timed if timed else None  # the time-weighted mean
    checkpoints = list_checkpoints(run_dir)
    evaluations = [{"step": m["step"], **{k[len("eval_"):]: v for k, v in m.items() if k.startswith("eval_")}}
                   for m in metrics if "eval_mnist_fd" in m]  # fmt: skip
    return {
        "name": run_dir.name,
        "run_dir": str(run_dir),
        "config": config,
        "step": curve["step"][-1] if curve["step"] else (checkpoints[-1][0] if checkpoints else 0),
        "steps": config.get("train", {}).get("steps"),
        "train_seconds": seconds,
        "img_per_s": img_per_s,
        "loss": curve["loss"][-1] if curve["loss"] else None,
        "eval": latest_evaluation(run_dir, metrics),
        "checkpoint": str(checkpoints[-1][1]) if checkpoints else None,
        "evolution": str(run_dir / "evolution.png") if (run_dir / "evolution.png").is_file() else None,
        "curve": curve,
        "evaluations": evaluations,
    }


def compare_runs(runs: Sequence[str | Path]) -> dict[str, Any]:
    """Every run's summary, and the config keys whose values are not the same in all of them."""
    summaries = [summarize_run(r) for r in runs]
    flats = [flat_config(s["config"]) for s in summaries]
    keys = sorted({k for f in flats for k in f}, key=lambda k: (k != "preset", k))
    differs = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats}) > 1]
    for summary, flat in zip(summaries, flats):
        summary["differs"] = {k: flat.get(k) for k in differs}
    return {"differs": differs, "runs": summaries}


def as_json(comparison: dict[str, Any]) -> dict[str, Any]:
    """What ``--json`` prints: the table's content, without the configs and curves."""
    drop = {"config", "curve", "evaluations"}
    return {"differs": comparison["differs"], "runs": [{k: v for k, v in s.items() if k not in drop} for s in comparison["runs"]]}


# -- the table ------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def table(comparison: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The comparison as a header and rows of text, for the terminal and the report alike."""
    header = ["run", *comparison["differs"], "steps", "training time", "images/s", "final loss",
              "prompt accuracy", "worst digit", "MNIST-FD (x floor)", "confidence", "evaluated at"]  # fmt: skip
    rows = []
    for s in comparison["runs"]:
        e = s["eval"] or {}
        fd = f"{e['mnist_fd']:.2f} ({e['fd_ratio']:.2f}x)" if e.get("mnist_fd") is not None and e.get("fd_ratio") is not None else "-"
        where = f"step {e['step']}" + (f", N={e['num_images']}" if e.get("num_images") else "") if e else "-"
        rows.append([
            s["name"], *(_value(s["differs"][k]) for k in comparison["differs"]),
            f"{s['step']}/{_value(s['steps'])}", _duration(s["train_seconds"]),
            "-" if s["img_per_s"] is None else f"{s['img_per_s']:.0f}",
            "-" if s["loss"] is None else f"{s['loss']:.4f}",
            _percent(e.get("accuracy")), _percent(e.get("min_digit_accuracy")), fd, _percent(e.get("confidence")), where,
        ])  # fmt: skip
    return header, rows
