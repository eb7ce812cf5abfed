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


# what `--resume` may change: the budget, where and how the run reports, and the learning rate (after a divergence)
CHANGEABLE_ON_RESUME = RESUMABLE_TRAIN_KEYS | {"lr"}


def _resume_config(run_dir: Path, overrides: dict[str, Any], preset: str | None, config_file: Path | None) -> Config:
    """The run's saved config, with the flags that may change on resume put in.

    People retype the command they started with and add ``--resume``: every flag, ``--preset`` and
    ``--config`` setting that agrees with the saved config is accepted; one that conflicts is refused,
    naming both values.
    """
    from pydantic import ValidationError

    from ..config import flat_config, format_validation_error, load_toml_file
    from ..tracking import RUN_CONFIG, read_run_record

    if not (run_dir / RUN_CONFIG).exists():
        raise TinyDiffError(f"--resume: {run_dir} is not a run directory (no config.json); start it without --resume")
    saved_raw = read_run_record(run_dir)["config"]
    try:
        saved = Config.model_validate(saved_raw)
    except ValidationError as exc:
        raise TinyDiffError(format_validation_error(exc, source=str(run_dir / RUN_CONFIG)) + "; it was edited or is damaged") from None
    given: list[tuple[str, Any, str]] = []  # (dotted key, value, the flag or file that gives it)
    if preset is not None:
        given.append(("preset", preset, f"--preset {preset}"))
    if config_file is not None:
        file_data = load_toml_file(config_file)
        given += [(key, value, f"--config {config_file}") for key, value in flat_config(file_data).items()]
    for key, value in flat_config(overrides).items():
        flag = "--" + key.rsplit(".", 1)[-1].replace("_", "-")
        flag = {"--name": "--schedule", "--text": "--conditioning"}.get(flag, flag)
        given.append((key, value, flag))
    saved_flat = flat_config(saved.model_dump(mode="json"))
    changes: dict[str, Any] = {}
    for key, value, source in given:
        section, _, name = key.partition(".")
        if section == "train" and name in CHANGEABLE_ON_RESUME:
            changes = merge(changes, {"train": {name: value}})
            continue
        if key == "model.text" and isinstance(value, dict) and not value:  # --conditioning text
            agrees, have = saved.model.text is not None, "text" if saved.model.text is not None else "none"
            value = "text"
        elif key == "model.text" and value is None:  # --conditioning none
            agrees, have, value = saved.model.text is None, "text" if saved.model.text is not None else "none", "none"
        else:
            have = saved_flat.get(key, "(not set)")
            agrees = key in saved_flat and _same(value, have)
        if not agrees:
            raise TinyDiffError(
                f"--resume: {source} sets {key} = {value!r}, but the run in {run_dir} has {key} = {have!r}; "
                f"drop it to continue the run as it was, or start a new run with another --run-dir"
            )
    try:
        return Config.model_validate(merge(saved.model_dump(mode="json"), changes))
    except ValidationError as exc:
        raise TinyDiffError(format_validation_error(exc)) from None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return bool(a == b)


def _resume_command(run_dir: Path) -> str:
    """The exact command that continues ``run_dir`` (the same number of processes under torchrun)."""
    import shlex

    world = os.environ.get("WORLD_SIZE", "1")
    launcher = f"torchrun --nproc_per_node {world} -m tinydiff" if world not in ("", "1") else "tinydiff"
    return f"{launcher} train --run-dir {shlex.quote(str(run_dir))} --resume"


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
    seed: Optional[int] = typer.Option(None, "--seed", show_default=_default(_D.train.seed), help="Seed for init, data order and noise: 0 to 4294967295."),
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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only warnings, errors and the final line."),
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

    if not resume and str(run_dir).strip() in ("", "."):  # `--run-dir ""` is the current directory, with everything in it
        raise TinyDiffError("--run-dir must name a new folder for the run, not the current directory")

    with importing_torch():
        from ..train import TrainingAborted, train  # torch is imported only now

    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 reports
    try:
        with TrainProgress(quiet=quiet) as progress:
            result = train(config, run_dir, resume=resume, command=["tinydiff", *sys.argv[1:]], callback=progress)
    except TrainingAborted as exc:
        if main_rank:
            err_console.print(
                f"interrupted again: stopped at once without saving; resume from the newest checkpoint with: {_resume_command(run_dir)}",
                style="yellow", markup=False,
            )  # fmt: skip
        raise typer.Exit(128 + exc.signum) from None
    if not main_rank:
        if result.interrupted:
            raise typer.Exit(128 + result.interrupted)
        return
    if result.already_done:
        err_console.print(f"{run_dir} is already at step {result.step} of {result.step}; raise --steps to train on", markup=False)
        return
    if result.interrupted:
        err_console.print(
            f"interrupted at step {result.step}; checkpoint saved; resume with: {_resume_command(run_dir)}",
            style="yellow", markup=False,
        )  # fmt: skip
        raise typer.Exit(128 + result.interrupted)
    loss = f"{result.loss:.4f}" if result.loss is not None else "n/a"
    err_console.print(f"done: step {result.step}, loss {loss}; samples in {run_dir}/samples, evolution in {run_dir}/evolution.png", markup=False)
    if not quiet:
        err_console.print(f"next: tinydiff sample --model {run_dir}", markup=False)


class TrainProgress:
    """Progress fed by the training loop's callback events.

    On a terminal: a Rich progress bar. Otherwise (``nohup``, a job scheduler, ``2>train.log``): one
    plain line per metrics line, every ``--log-every`` steps, with no control characters. ``quiet``:
    nothing but warnings, errors and the final line.
    """

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.bar = err_console.is_terminal and not quiet

    def __enter__(self) -> "TrainProgress":
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False,
        )  # fmt: skip
        self.task = None
        self.started = (0.0, 0)  # wall clock and step at the start, for the plain lines' ETA
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.task is not None:  # started only once training did: an early error stays one line
            self.progress.__exit__(*exc)

    def _line(self, text: str) -> None:
        (self.progress.console if self.task is not None else err_console).print(text, markup=False, highlight=False)

    def __call__(self, event: dict[str, Any]) -> None:
        import time

        kind = event["event"]
        if kind == "start":
            self.started = (time.monotonic(), event["step"])
            if self.quiet:
                return
            params = event["parameters"] / 1e6
            if event.get("restarted"):
                err_console.print(f"{event['run_dir']} has no checkpoint yet: training it again from step 0", markup=False)
            if event.get("lr_note"):
                err_console.print(event["lr_note"], markup=False)
            err_console.print(
                f"training {params:.2f}M parameters on {event['device']} into {event['run_dir']}"
                + (f" (resuming at step {event['step']})" if event["step"] else ""),
                markup=False,
            )  # fmt: skip
            if self.bar:
                self.progress.__enter__()
                self.task = self.progress.add_task("train", total=event["total"], completed=event["step"], stats="")
        elif self.quiet:
            return
        elif kind == "eval":
            acc = f"prompt accuracy {event['eval_accuracy']:.1%}, " if "eval_accuracy" in event else ""
            self._line(
                f"step {event['step']}: {acc}MNIST-FD {event['eval_mnist_fd']:.2f} "
                f"({event['eval_fd_ratio']:.1f}x the floor), {event['seconds']:.0f} s"
            )
        elif kind == "log" and self.task is not None:
            stats = f"loss {event['loss']:.4f}  {event['img_per_s']:.0f} img/s"
            self.progress.update(self.task, stats=stats)
        elif kind == "log":  # no terminal: a plain line
            since, first = self.started
            done = event["step"] - first
            eta = (time.monotonic() - since) / done * (event["total"] - event["step"]) if done > 0 else None
            self._line(
                f"step {event['step']}/{event['total']}  loss {event['loss']:.4f}  {event['img_per_s']:.0f} img/s  "
                f"ETA {format_duration(eta)}"
            )
        elif kind == "step" and self.task is not None:
            self.progress.update(self.task, completed=event["step"])


def format_duration(seconds: float | None) -> str:
    """``42s``, ``4m10s``, ``2h05m``; ``?`` when not known yet."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
