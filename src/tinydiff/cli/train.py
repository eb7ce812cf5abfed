"""``tinydiff train``: resolve the config, then run :func:`tinydiff.train.train` under a Rich progress bar."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Optional

import typer

from ..config import DEFAULT_PRESET, RESUMABLE_TRAIN_KEYS, Config, merge, preset_names, resolve_config
from ..errors import TinyDiffError
from .options import Conditioning, Device, complete_names, finite_float, names_help, registry_name
from .output import err_console, handles_errors, importing_torch

PresetName = Literal[tuple(preset_names())]  # type: ignore[valid-type]
_D = resolve_config(None, None, {})  # the default preset's values, shown in --help


def _default(value: Any) -> str:
    return f"preset {DEFAULT_PRESET}: {value}"


def _overrides(**flags: Any) -> dict[str, Any]:
    """Command-line flags that were given, as a nested config dict."""
    out: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None:
            continue
        if key == "schedule":
            out = merge(out, {"schedule": {"name": value}})
        elif key == "conditioning":
            choices = {"text": {}, "none": None}  # {}: the preset's text settings, or the defaults
            if value not in choices:
                raise TinyDiffError(f"--conditioning must be 'text' or 'none', got {value!r}")
            out = merge(out, {"model": {"text": choices[value]}})
        else:
            out = merge(out, {"train": {key: value}})
    return out


def _resume_config(run_dir: Path, overrides: dict[str, Any], preset: str | None, config_file: Path | None) -> Config:
    path = run_dir / "config.json"
    if not path.is_file():
        raise TinyDiffError(f"--resume: {run_dir} is not a run directory (no config.json); start it without --resume")
    changed = sorted(set(overrides.get("train", {})) - RESUMABLE_TRAIN_KEYS) + (["schedule"] if "schedule" in overrides else [])
    changed += ["conditioning"] if "model" in overrides else []
    if preset or config_file:
        changed.insert(0, "preset" if preset else "config")
    if changed:
        raise TinyDiffError(
            f"--resume keeps the run's own config; drop --{changed[0].replace('_', '-')} "
            "(only --steps, --max-minutes, --sample-every, --checkpoint-every, --keep-checkpoints, --eval-every, --tracker, "
            "--device and --data-dir may change)"
        )
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise TinyDiffError(f"{path} is corrupted; it cannot be resumed") from None
    return Config.model_validate(merge(saved, overrides))


@handles_errors
def train_command(
    preset: Optional[PresetName] = typer.Option(None, "--preset", show_default=DEFAULT_PRESET, help="Bundled preset (docs/experiments.md)."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="TOML file overriding the preset."),
    schedule: Optional[str] = typer.Option(None, "--schedule", parser=registry_name("schedule"), autocompletion=complete_names("schedule"),
                                           show_default=_default(_D.schedule.name), help=f"Noise schedule: {names_help('schedule')}."),
    steps: Optional[int] = typer.Option(None, "--steps", show_default=_default(_D.train.steps), help="Optimizer steps to train for."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", show_default=_default(_D.train.batch_size), help="Images per step."),
    lr: Optional[float] = typer.Option(None, "--lr", parser=finite_float, show_default=_default(_D.train.lr), help="Peak learning rate (AdamW)."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Folder holding MNIST/raw (default: $TINYDIFF_DATA_DIR)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", show_default="runs/<preset>-<time>", help="Run directory."),
    device: Optional[Device] = typer.Option(None, "--device", show_default=_default(_D.train.device), help="Where to train; auto: cuda, then mps, then cpu."),
    seed: Optional[int] = typer.Option(None, "--seed", show_default=_default(_D.train.seed), help="Seed for init, data order and noise."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir from its newest checkpoint."),
    sample_every: Optional[int] = typer.Option(None, "--sample-every", show_default=_default(_D.train.sample_every), help="Steps between sample snapshots."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", show_default=_default(_D.train.checkpoint_every), help="Steps between checkpoints."),
    log_every: Optional[int] = typer.Option(None, "--log-every", show_default=_default(_D.train.log_every), help="Steps between metrics lines."),
    conditioning: Optional[Conditioning] = typer.Option(None, "--conditioning", show_default=_default("text" if _D.model.text is not None else "none"),
                                                        help="text: condition on captions; none: unconditional."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", show_default="off", help="Steps between eval figures in metrics.jsonl."),
    keep_checkpoints: Optional[int] = typer.Option(None, "--keep-checkpoints", show_default="all", help="Keep only the newest K checkpoints."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", parser=finite_float, show_default="no limit", help="Stop, with a checkpoint, after this much training time."),
    trackers: Optional[list[str]] = typer.Option(None, "--tracker", help="Also log to this tracker: csv, tensorboard or a plugin's (repeatable)."),
) -> None:
    """Train a diffusion model on MNIST; the run is tracked in --run-dir."""
    overrides = _overrides(
        schedule=schedule, steps=steps, batch_size=batch_size, lr=lr, data_dir=data_dir, device=device,
        seed=seed, sample_every=sample_every, checkpoint_every=checkpoint_every, log_every=log_every,
        conditioning=conditioning, eval_every=eval_every, keep_checkpoints=keep_checkpoints,
        max_minutes=max_minutes, trackers=trackers or None,
    )  # fmt: skip
    if resume:
        if run_dir is None:
            raise TinyDiffError("--resume needs --run-dir: the run to continue")
        config = _resume_config(run_dir, overrides, preset, config_file)
    else:
        config = resolve_config(preset, config_file, overrides)
        if run_dir is None and os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
            raise TinyDiffError("under torchrun, pass --run-dir so that every process trains the same run")
        run_dir = run_dir or Path("runs") / f"{config.preset}-{datetime.now():%Y%m%d-%H%M%S}"

    with importing_torch():
        from ..train import train  # torch is imported only now

    with TrainProgress() as progress:
        result = train(config, run_dir, resume=resume, command=["tinydiff", *sys.argv[1:]], callback=progress)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 reports
    loss = f"{result.loss:.4f}" if result.loss is not None else "n/a"
    err_console.print(f"done: step {result.step}, loss {loss}; samples in {run_dir}/samples, evolution in {run_dir}/evolution.png")
    err_console.print(f"next: tinydiff sample --model {run_dir}")


class TrainProgress:
    """A Rich progress bar fed by the training loop's callback events."""

    def __enter__(self) -> "TrainProgress":
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False,
        )  # fmt: skip
        self.task = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.task is not None:  # started only once training did: an early error stays one line
            self.progress.__exit__(*exc)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "start":
            params = event["parameters"] / 1e6
            err_console.print(
                f"training {params:.2f}M parameters on {event['device']} into {event['run_dir']}"
                + (f" (resuming at step {event['step']})" if event["step"] else "")
            )
            self.progress.__enter__()
            self.task = self.progress.add_task("train", total=event["total"], completed=event["step"], stats="")
        elif kind == "eval":
            acc = f"prompt accuracy {event['eval_accuracy']:.1%}, " if "eval_accuracy" in event else ""
            self.progress.console.print(
                f"step {event['step']}: {acc}MNIST-FD {event['eval_mnist_fd']:.2f} "
                f"({event['eval_fd_ratio']:.1f}x the floor), {event['seconds']:.0f} s"
            )
        elif kind == "log" and self.task is not None:
            stats = f"loss {event['loss']:.4f}  {event['img_per_s']:.0f} img/s"
            self.progress.update(self.task, stats=stats)
        elif kind == "step" and self.task is not None:
            self.progress.update(self.task, completed=event["step"])
