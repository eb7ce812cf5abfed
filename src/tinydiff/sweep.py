"""Sweeps: variants of one base config, each trained as a normal run under one budget, then evaluated.

    tinydiff sweep examples/schedules.toml --out runs/schedules    # train, evaluate, compare
    tinydiff sweep examples/schedules.toml --dry-run               # the variants and what each changes

A sweep file names a base (``preset``, ``config`` and config tables), one budget (``steps``
and/or ``max_minutes``), the variants, either a ``[grid]`` of values crossed with each
other or ``[variants.NAME]`` tables of overrides, and the ``[eval]`` settings of
``tinydiff eval``. Every variant is resolved and checked before the first one trains.

Variants train in this process, one after the other, through :func:`tinydiff.train.train`:
one progress display follows them all, and a variant killed mid-run continues through the
same ``resume=True`` path as ``tinydiff train --resume``, bit for bit. ``sweep.json`` records
which variants finished training; a run's ``eval.json`` holds its evaluation.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import (
    RESUMABLE_TRAIN_KEYS,
    Config,
    flat_config,
    format_validation_error,
    load_toml_file,
    merge,
    parse_guidance_interval,
    resolve_config,
)
from .errors import Interrupted, TinyDiffError
from .files import write_json
from .tracking import EVAL, RUN_CONFIG

SWEEP_STATE = "sweep.json"
REPORT = "report.html"  # the comparison `tinydiff sweep` writes beside the runs
_VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
Callback = Callable[[dict[str, Any]], None]


class EvalSettings(BaseModel):
    """``[eval]``: the options of ``tinydiff eval``, applied to each variant's final checkpoint."""

    model_config = ConfigDict(extra="forbid")

    num_per_digit: int = Field(100, ge=2)  # images per digit, as `tinydiff eval --num-per-digit`
    sampler: str | None = None  # None: `tinydiff sample`'s default
    steps: int | None = Field(None, gt=0)
    guidance: float | None = Field(None, ge=0, allow_inf_nan=False)
    guidance_interval: str | None = None  # "LO,HI" or "all", as --guidance-interval
    spacing: str | None = None  # the timestep grid, as --spacing; None: the sampler's
    seed: int = Field(0, ge=0)
    style: bool = False  # also the style words (text models), as `tinydiff eval --style`

    def sampling(self) -> dict[str, Any]:
        """The sampling options, as ``Pipeline.options`` and ``evaluate_pipeline`` take them."""
        return {"sampler": self.sampler, "steps": self.steps, "guidance": self.guidance,
                "guidance_interval": parse_guidance_interval(self.guidance_interval), "spacing": self.spacing}  # fmt: skip


class SweepFile(BaseModel):
    """The keys of a sweep file."""

    model_config = ConfigDict(extra="forbid")

    preset: str | None = None  # the base preset (default: tinydiff train's)
    config: str | None = None  # a config file on top of it, relative to the sweep file
    steps: int | None = Field(None, gt=0)  # the budget of every variant: optimizer steps,
    max_minutes: float | None = Field(None, gt=0)  # and/or minutes of training steps
    model: dict[str, Any] = Field(default_factory=dict)  # config tables every variant shares
    schedule: dict[str, Any] = Field(default_factory=dict)
    diffusion: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Any] = Field(default_factory=dict)  # key -> list of values; the variants are every combination
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)  # name -> overrides
    eval: EvalSettings = Field(default_factory=EvalSettings)


@dataclass
class Variant:
    """One run of a sweep: its name (the run directory's), its resolved config, and what it changes from the base."""

    name: str
    config: Config
    changes: dict[str, tuple[Any, Any]]  # dotted key -> (the base's value, this variant's)


@dataclass
class Sweep:
    """A loaded, checked sweep file."""

    path: Path
    spec: SweepFile
    base: Config
    variants: list[Variant]


# -- reading a sweep file ------------------------------------------------------------


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    """``"train.lr", 0.002`` -> ``{"train": {"lr": 0.002}}``; ``schedule`` alone is the schedule's name."""
    if dotted == "schedule":
        dotted = "schedule.name"
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def _overrides(table: dict[str, Any]) -> dict[str, Any]:
    """A variant's table as config overrides: ``schedule = "cosine"`` is short for ``[schedule] name = "cosine"``."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        out = merge(out, _nested(key, value) if key == "schedule" and isinstance(value, str) else {key: value})
    return out


def _grid_axes(grid: dict[str, Any], prefix: str = "") -> list[tuple[str, list[Any]]]:
    """``[grid]`` flattened to (dotted key, values) axes, in file order; sub-tables nest (``[grid.train] lr = [...]``)."""
    axes = []
    for key, values in grid.items():
        dotted = f"{prefix}{key}"
        if isinstance(values, dict):
            axes += _grid_axes(values, f"{dotted}.")
        elif isinstance(values, list) and values:
            axes.append((dotted, values))
        else:
            raise TinyDiffError(f"[grid] {dotted} must be a non-empty list of values, got {values!r}")
    return axes


def _name_part(dotted: str, value: Any) -> str:
    """A piece of a grid variant's name: the value itself for words (``cosine``), else key and value (``lr0.002``)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list):
        text = dotted.split(".")[-1] + "x".join(str(v) for v in value)
    else:
        text = f"{dotted.split('.')[-1]}{str(value).lower()}"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def _variant_tables(spec: SweepFile) -> list[tuple[str, dict[str, Any]]]:
    """(name, overrides) of every variant, from ``[grid]`` or ``[variants.*]``."""
    if spec.grid and spec.variants:
        raise TinyDiffError("a sweep takes [grid] or [variants.NAME] tables, not both; make the grid's values variants")
    if spec.variants:
        return [(name, _overrides(table)) for name, table in spec.variants.items()]
    if not spec.grid:
        raise TinyDiffError("a sweep needs variants: a [grid] of values (schedule = [\"linear\", \"cosine\"]) or [variants.NAME] tables")
    axes = _grid_axes(spec.grid)
    out = []
    for values in itertools.product(*(vals for _, vals in axes)):
        name = "-".join(_name_part(key, value) for (key, _), value in zip(axes, values))
        overrides: dict[str, Any] = {}
        for (key, _), value in zip(axes, values):
            overrides = merge(overrides, _nested(key, value))
        out.append((name, overrides))
    return out


def _changes(base: Config, config: Config) -> dict[str, tuple[Any, Any]]:
    """Every dotted config key whose value differs from the base: key -> (the base's value, the variant's)."""
    before, after = flat_config(base.model_dump(mode="json")), flat_config(config.model_dump(mode="json"))
    return {k: (before.get(k), after.get(k)) for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}


def check_config(config: Config, eval_settings: EvalSettings | None = None) -> None:
    """Refuse what a run would refuse at its start, without MNIST: names, architecture, sampler steps, trackers, device."""
    from .checkpoint import ModelFolderConfig
    from .nn.unet import UNet
    from .pipeline import Pipeline, resolve_device
    from .trackers import check_trackers

    tc = config.train
    resolve_device(tc.device)
    model = UNet(config.model)  # block and text-encoder names, and the architecture
    pipe = Pipeline(ModelFolderConfig(model=config.model, schedule=config.schedule, diffusion=config.diffusion), model)
    pipe.options(sampler=tc.sample_sampler, steps=tc.sample_steps, guidance=tc.sample_guidance)  # as the Trainer checks
    if tc.eval_every:
        pipe.options(sampler=tc.eval_sampler, steps=tc.eval_steps)
    if eval_settings is not None:
        pipe.options(**eval_settings.sampling())
    check_trackers(tc.trackers)


def load_sweep(path: str | Path, *, device: str | None = None, data_dir: str | None = None) -> Sweep:
    """Read a sweep file and resolve and check every variant (``device``, ``data_dir``: for all of them)."""
    path = Path(path)
    raw = load_toml_file(path)
    try:
        spec = SweepFile.model_validate(raw)
    except ValidationError as exc:
        raise TinyDiffError(format_validation_error(exc, source=f"sweep file {str(path)!r}")) from None
    if spec.steps is None and spec.max_minutes is None:
        raise TinyDiffError(f"sweep file {str(path)!r} has no budget; set steps = N and/or max_minutes = M at its top")
    config_file = (path.parent / spec.config) if spec.config else None
    shared = {k: v for k, v in {"model": spec.model, "schedule": spec.schedule, "diffusion": spec.diffusion,
                                "train": spec.train}.items() if v}  # fmt: skip
    for_all = {"train": {k: v for k, v in {"steps": spec.steps, "max_minutes": spec.max_minutes, "device": device,
                                           "data_dir": data_dir}.items() if v is not None}}  # fmt: skip

    def resolve(where: str, preset: str | None, overrides: dict[str, Any]) -> Config:
        try:
            return resolve_config(preset or spec.preset, config_file, merge(merge(shared, overrides), for_all))
        except ValidationError as exc:
            raise TinyDiffError(format_validation_error(exc, source=where)) from None
        except TinyDiffError as exc:
            raise TinyDiffError(f"{where}: {exc}") from None

    base = resolve(f"sweep file {str(path)!r}", None, {})
    variants, seen = [], set()
    for name, overrides in _variant_tables(spec):
        if not _VARIANT_NAME.match(name) or name in (SWEEP_STATE, REPORT):
            raise TinyDiffError(f"variant name {name!r} is not a folder name; use letters, digits, '.', '_', '+', '-'")
        if name in seen:
            raise TinyDiffError(f"two variants are named {name!r}; give each variant its own name")
        seen.add(name)
        preset = overrides.pop("preset", None)
        config = resolve(f"variant {name!r}", preset, overrides)
        try:
            check_config(config, spec.eval)
        except TinyDiffError as exc:
            raise TinyDiffError(f"variant {name!r}: {exc}") from None
        variants.append(Variant(name, config, _changes(base, config)))
    return Sweep(path, spec, base, variants)


# -- running it ---------------------------------------------------------------------


def _read_state(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / SWEEP_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise TinyDiffError(f"{out / SWEEP_STATE} is corrupted; choose another --out") from None


def _check_out(sweep: Sweep, out: Path) -> None:
    """Refuse an ``out`` that is not this sweep's folder: a file, other files, or runs trained with other settings."""
    if not out.exists():
        return
    if not out.is_dir():
        raise TinyDiffError(f"--out {out} is a file; give a folder for the sweep's runs")
    if not (out / SWEEP_STATE).is_file():
        if any(out.iterdir()):
            raise TinyDiffError(f"--out {out} holds files but no {SWEEP_STATE}; it is not a sweep folder, choose another")
        return
    _read_state(out)
    for variant in sweep.variants:
        record = out / variant.name / RUN_CONFIG
        if not record.is_file():
            continue
        try:
            raw = json.loads(record.read_text(encoding="utf-8"))["config"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: nothing to compare it with
        try:  # a run from before a config key was added has that key at its default
            saved = flat_config(Config.model_validate(raw).model_dump(mode="json"))
        except ValidationError:
            saved = flat_config(raw) if isinstance(raw, dict) else {}
        wanted = flat_config(variant.config.model_dump(mode="json"))
        for key in sorted(set(saved) | set(wanted)):
            if saved.get(key) != wanted.get(key) and key.removeprefix("train.") not in RESUMABLE_TRAIN_KEYS:
                raise TinyDiffError(
                    f"{out / variant.name} was trained with {key} = {saved.get(key)!r}, but the sweep now gives "
                    f"{wanted.get(key)!r}; choose another --out, or delete that run to train it again"
                )


def _write_state(sweep: Sweep, out: Path, trained: dict[str, Any]) -> None:
    write_json(out / SWEEP_STATE, {
        "sweep": str(sweep.path),
        "budget": {"steps": sweep.spec.steps, "max_minutes": sweep.spec.max_minutes},
        "eval": sweep.spec.eval.model_dump(mode="json"),
        "variants": [{"name": v.name, "changes": {k: list(pair) for k, pair in v.changes.items()},
                      "trained": trained.get(v.name)} for v in sweep.variants],
    })  # fmt: skip


def recorded_variants(out: str | Path) -> list[dict[str, Any]]:
    """The variants ``sweep.json`` in ``out`` lists, in order: name, changes, trained (none when ``out`` is no sweep)."""
    out = Path(out)
    return _read_state(out).get("variants", []) if (out / SWEEP_STATE).is_file() else []


def trained_variants(out: str | Path) -> dict[str, Any]:
    """What ``sweep.json`` in ``out`` says finished training: name -> {step, steps, max_minutes}."""
    return {v["name"]: v["trained"] for v in recorded_variants(out) if v.get("trained")}


def variant_status(variant: Variant, out: Path, trained: dict[str, Any], settings: EvalSettings) -> str:
    """``new``, ``resumable`` (a checkpoint to continue from), ``trained`` (under this budget) or ``evaluated`` (as asked)."""
    from .checkpoint import STATE_FILE, list_checkpoints

    run = out / variant.name
    done = trained.get(variant.name)
    tc = variant.config.train
    checkpoints = list_checkpoints(run)
    if done and (done.get("steps"), done.get("max_minutes")) == (tc.steps, tc.max_minutes) and checkpoints:
        try:
            evaluation = json.loads((run / EVAL).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "trained"
        try:  # settings written before a newer tinydiff added a key compare with that key at its default
            recorded = EvalSettings.model_validate(evaluation.get("settings"))
        except ValidationError:
            return "trained"
        return "evaluated" if evaluation.get("step") == done.get("step") and recorded == settings else "trained"
    if any((p / STATE_FILE).is_file() for _, p in checkpoints):
        return "resumable"
    return "new"


def run_sweep(sweep: Sweep, out: str | Path, *, callback: Callback | None = None) -> list[dict[str, Any]]:
    """Train every variant not yet trained into ``out/<name>``, then evaluate each; returns each variant's evaluation.

    Run again after an interruption, it keeps what finished and resumes the interrupted variant exactly.
    """
    from .train import train

    out = Path(out)
    emit = callback or (lambda event: None)
    _check_out(sweep, out)
    trained = trained_variants(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_state(sweep, out, trained)
    settings = sweep.spec.eval
    statuses = {v.name: variant_status(v, out, trained, settings) for v in sweep.variants}
    emit({"event": "sweep", "statuses": statuses, "steps": {v.name: v.config.train.steps for v in sweep.variants}})

    for variant in sweep.variants:
        run, status = out / variant.name, statuses[variant.name]
        emit({"event": "variant", "name": variant.name, "status": status})
        if status in ("trained", "evaluated"):
            continue
        if status == "new" and run.exists():
            shutil.rmtree(run)  # killed before its first checkpoint: nothing to resume, so it starts again
        result = train(variant.config, run, resume=status == "resumable", command=["tinydiff", "sweep", str(sweep.path)],
                       callback=lambda event, name=variant.name: emit({**event, "variant": name}))  # fmt: skip
        if result.interrupted:  # Ctrl-C or SIGTERM: the variant saved a checkpoint; the sweep stops here
            raise Interrupted(
                f"sweep interrupted in variant {variant.name!r} at step {result.step}; checkpoint saved; "
                f"run the same `tinydiff sweep` command again to continue",
                exit_code=128 + result.interrupted,
            )
        tc = variant.config.train
        trained[variant.name] = {"step": result.step, "steps": tc.steps, "max_minutes": tc.max_minutes}
        _write_state(sweep, out, trained)

    reports = []
    for variant in sweep.variants:
        run, tc = out / variant.name, variant.config.train
        if variant_status(variant, out, trained, settings) != "evaluated":
            emit({"event": "evaluate", "name": variant.name})
            report = evaluate_run(run, settings, step=trained[variant.name]["step"], data_dir=tc.data_dir, device=tc.device,
                                  callback=lambda info, name=variant.name: emit({"event": "eval_batch", "name": name, **info}))  # fmt: skip
            write_json(run / EVAL, report)
        reports.append(json.loads((run / EVAL).read_text(encoding="utf-8")))
        emit({"event": "evaluated", "name": variant.name, "report": reports[-1]})
    return reports


def evaluate_run(
    run: Path, settings: EvalSettings, *, step: int, data_dir: str | None, device: str, callback: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """``tinydiff eval`` of a run's newest checkpoint, with the step it scored and the settings it used."""
    from .evaluate import evaluate_pipeline, style_report
    from .pipeline import Pipeline

    pipe = Pipeline.from_ref(str(run), device=device)
    given = settings.sampling()
    report = evaluate_pipeline(pipe, num_per_digit=settings.num_per_digit, seed=settings.seed, data_dir=data_dir,
                               callback=callback, **given)  # fmt: skip
    if settings.style and pipe.is_text_model:
        report["style"] = style_report(pipe, num_per_digit=max(1, settings.num_per_digit // 2), seed=settings.seed, **given)
    return {"step": step, "settings": settings.model_dump(mode="json"), **report}
