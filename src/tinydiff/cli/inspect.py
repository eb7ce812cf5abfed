"""``tinydiff inspect``: what a run or model folder holds, without loading torch."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import typer

from ..checkpoint import (
    VOCAB_FILE,
    WEIGHTS_FILE,
    is_model_folder,
    list_checkpoints,
    read_json_object,
    read_json_file,
    read_model_config,
    resolve_model_ref,
    safetensors_header,
)
from ..errors import TinyDiffError
from ..tracking import RUN_CONFIG, find_runs, is_run_dir, list_snapshots, read_metrics
from .output import console, handles_errors, warning_line


def parameter_count(folder: Path) -> int:
    total = 0
    for name, info in safetensors_header(folder / WEIGHTS_FILE).items():
        if name == "__metadata__":
            continue
        n = 1
        for d in info["shape"]:
            n *= d
        total += n
    return total


def vocabulary_size(folder: Path) -> int | None:
    """Tokens in a text model's ``vocab.json`` (specials included), read without torch."""
    path = folder / VOCAB_FILE
    tokens = read_json_object(path, missing=f"{path} is missing; a text model folder needs its {VOCAB_FILE}").get("tokens")
    if not isinstance(tokens, list):
        raise TinyDiffError(f"{path}: 'tokens' must be a list of strings; the model folder is corrupted")
    return len(tokens)


def describe_model(folder: Path) -> dict[str, Any]:
    cfg = read_model_config(folder)
    text = cfg.model.text
    return {
        "text_encoder": None if text is None else {**text.model_dump(mode="json"), "vocab_size": vocabulary_size(folder)},
        "path": str(folder),
        "parameters": parameter_count(folder),
        "model": cfg.model.model_dump(mode="json"),
        "schedule": cfg.schedule.model_dump(mode="json"),
        "diffusion": cfg.diffusion.model_dump(mode="json"),
        "training": cfg.training,
        "tinydiff_version": cfg.tinydiff_version,
    }


def read_run_record(run_dir: Path) -> dict[str, Any]:
    """A run's ``config.json`` (empty when there is none), checked to be the shape TinyDiff writes."""
    path = run_dir / RUN_CONFIG
    if not path.exists():
        return {}
    record = read_json_file(path, missing=f"{path} is missing")
    if not isinstance(record, dict):
        raise TinyDiffError(f"{path} must hold a JSON object, not a {type(record).__name__}; it is not a TinyDiff run's")
    config = record.get("config", {})
    if not isinstance(config, dict):
        raise TinyDiffError(f"{path}: 'config' must be a JSON object, not a {type(config).__name__}; it is not a TinyDiff run's")
    for key, value in config.items():
        if key in ("model", "schedule", "diffusion", "train") and not isinstance(value, dict):
            raise TinyDiffError(f"{path}: 'config.{key}' must be a JSON object, not a {type(value).__name__}; it is not a TinyDiff run's")
    return record


def describe_run(run_dir: Path) -> dict[str, Any]:
    record = read_run_record(run_dir)
    config = record.get("config", {})
    metrics = read_metrics(run_dir, strict=True)
    checkpoints = list_checkpoints(run_dir)
    logged = [m for m in metrics if "step" in m]
    last = logged[-1] if logged else {}  # during training the newest line is ahead of the newest checkpoint
    evaluated = [m for m in metrics if "eval_mnist_fd" in m]
    info: dict[str, Any] = {
        "run_dir": str(run_dir),
        "preset": config.get("preset"),
        "step": last.get("step", checkpoints[-1][0] if checkpoints else 0),
        "checkpoint_step": checkpoints[-1][0] if checkpoints else None,
        "steps": config.get("train", {}).get("steps"),
        "loss": last.get("loss"),
        "img_per_s": last.get("img_per_s"),
        "checkpoints": [str(p) for _, p in checkpoints],
        "snapshots": [str(p) for _, p in list_snapshots(run_dir)],
        "evolution": str(run_dir / "evolution.png") if (run_dir / "evolution.png").is_file() else None,
        "config": config,
        "command": record.get("command"),
        "versions": record.get("versions"),
        "git_commit": record.get("git_commit"),
        "metrics_logged": len(metrics),
        "eval": [{k: m[k] for k in m if k == "step" or k.startswith("eval_")} for m in evaluated],
    }
    if checkpoints:
        info["model"] = describe_model(checkpoints[-1][1])
    return info


def list_runs(root: Path) -> list[dict[str, Any]]:
    """A row for each run in a folder of runs and in its subfolders (a sweep's): preset, newest logged step and loss."""
    runs = []
    for run in find_runs(root):
        try:
            info = describe_run(run)
        except TinyDiffError as exc:  # one damaged run does not hide the others
            warning_line(f"{exc}; that run is not listed (tinydiff inspect {run} says more)")
            continue
        info["updated"] = datetime.fromtimestamp(run.stat().st_mtime).isoformat(timespec="seconds")
        runs.append({k: info[k] for k in ("run_dir", "preset", "step", "steps", "loss", "updated")})
    return runs


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@handles_errors
def inspect_command(
    ref: Optional[str] = typer.Argument(None, help="Run directory, folder of runs (a sweep's), model folder or bundled model (default: list ./runs)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Show a run or model: config, parameters, schedule, progress, snapshots. With no REF, or a folder of runs, list the runs."""
    from rich.table import Table

    path = Path(ref).expanduser() if ref is not None else Path("runs")
    if ref is None or (path.is_dir() and not is_model_folder(path) and not is_run_dir(path) and find_runs(path)):
        runs = list_runs(path)
        if as_json:
            typer.echo(json.dumps(runs, indent=2))
            return
        if not runs:
            console.print("no runs under ./runs; start one with `tinydiff train`")
            return
        table = Table("run", "preset", "step", "loss", "updated")
        for r in runs:
            table.add_row(r["run_dir"], _fmt(r["preset"]), f"{r['step']}/{_fmt(r['steps'])}", _fmt(r["loss"]), r["updated"])
        console.print(table)
        return

    if is_run_dir(path):
        info = describe_run(path)
    else:
        info = describe_model(resolve_model_ref(ref))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    model = info.get("model") if "run_dir" in info else info
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    if "run_dir" in info:
        table.add_row("run", info["run_dir"])
        table.add_row("preset", _fmt(info["preset"]))
        saved = info["checkpoint_step"]
        behind = "" if saved == info["step"] else " (no checkpoint yet)" if saved is None else f" (newest checkpoint: step {saved})"
        table.add_row("progress", f"step {info['step']} of {_fmt(info['steps'])}, loss {_fmt(info['loss'])}, "
                      f"{_fmt(info['img_per_s'])} img/s{behind}")  # fmt: skip
        table.add_row("checkpoints", str(len(info["checkpoints"])) + (f" (newest {info['checkpoints'][-1]})" if info["checkpoints"] else ""))
        for e in info["eval"][-5:]:
            acc = f"prompt accuracy {e['eval_accuracy']:.1%}, " if "eval_accuracy" in e else ""
            table.add_row(f"eval @ {e['step']}", f"{acc}MNIST-FD {e['eval_mnist_fd']:.2f} ({e['eval_fd_ratio']:.1f}x floor)")
        table.add_row("snapshots", str(len(info["snapshots"])) + (f", evolution: {info['evolution']}" if info["evolution"] else ""))
    if model:
        m, s = model["model"], model["schedule"]
        table.add_row("model", model["path"])
        table.add_row("parameters", f"{model['parameters']:,}")
        table.add_row("unet", f"channels {m['base_channels']} x {m['channel_mult']}, {m['num_res_blocks']} res blocks/level, "
                      f"attention at {m['attention_resolutions'] or 'none'}, time embedding {'on' if m['time_embedding'] else 'off'}, "
                      f"resampling {'on' if m['resample'] else 'off'}")  # fmt: skip
        table.add_row("schedule", f"{s['name']}, T={s['num_timesteps']}" + (f", {s['options']}" if s["options"] else ""))
        table.add_row("objective", model["diffusion"]["objective"])
        text = model.get("text_encoder")
        table.add_row("text", "none (unconditional)" if text is None else
                      f"{text['encoder']}: {text['layers']} layers, width {text['dim']}, vocabulary {text['vocab_size']} tokens, "
                      f"prompts up to {text['max_length'] - 1} words; cross-attention at {m['cross_attention_resolutions']}")  # fmt: skip
        if model.get("training"):
            table.add_row("trained", ", ".join(f"{k} {_fmt(v)}" for k, v in model["training"].items()))
    console.print(table)
