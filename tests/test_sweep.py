"""Sweeps: variants from a grid or a list, every one checked first, trained in turn, resumed exactly, evaluated."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import REPO, TINY_SWEEP, run_cli, write_tiny_sweep

from tinydiff.checkpoint import list_checkpoints
from tinydiff.errors import TinyDiffError
from tinydiff.sweep import load_sweep, run_sweep
from tinydiff.tracking import read_metrics

FIGURES = ("mnist_fd", "mnist_fd_floor", "fd_ratio", "confidence", "class_histogram", "num_images")


def test_a_grid_crosses_its_values_and_each_variant_lists_what_it_changes(tmp_path) -> None:
    text = TINY_SWEEP.replace('schedule = ["linear", "cosine"]', 'schedule = ["linear", "cosine"]\n[grid.train]\nlr = [0.001, 0.002]')
    sweep = load_sweep(write_tiny_sweep(tmp_path, text))
    assert [v.name for v in sweep.variants] == ["linear-lr0.001", "linear-lr0.002", "cosine-lr0.001", "cosine-lr0.002"]
    changes = {v.name: v.changes for v in sweep.variants}
    assert changes["linear-lr0.001"] == {}, "the base's own values change nothing"
    assert changes["cosine-lr0.002"] == {"schedule.name": ("linear", "cosine"), "train.lr": (0.001, 0.002)}
    assert all(v.config.train.steps == 10 and v.config.model.base_channels == 16 for v in sweep.variants), "budget and shared tables"


def test_named_variants_may_change_the_preset(tmp_path) -> None:
    variants = ('[variants.flat]\npreset = "stage2"\nmodel = { attention_resolutions = [] }  # the shared [model] table applies on top\n'
                "[variants.wide]\nmodel = { base_channels = 32 }\n")
    sweep = load_sweep(write_tiny_sweep(tmp_path, TINY_SWEEP.split("[grid]")[0] + variants))
    flat, wide = sweep.variants
    assert flat.config.preset == "stage2" and not flat.config.model.resample
    assert flat.changes == {"preset": ("stage3", "stage2"), "model.resample": (True, False), "model.attention_resolutions": ([14], [])}
    assert wide.changes == {"model.base_channels": (16, 32)}


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("steps = 10\n", "", 1), "has no budget"),
        (lambda t: t.split("[grid]")[0] + "[variants.a]\n[variants.b]\n[variants.c]\ntrain = { stepz = 3 }\n",
         "variant 'c': train.stepz: unknown key"),
        (lambda t: t.replace('"cosine"]', '"cosin"]'), "variant 'cosin': unknown schedule 'cosin'"),
        (lambda t: t.replace("[eval]\n", "[eval]\nsampler = \"nope\"\n"), "unknown sampler 'nope'"),
        (lambda t: t + "[variants.x]\n", "[grid] or [variants.NAME] tables, not both"),
        (lambda t: t.replace("groups = 4", "groups = 5"), "does not divide"),
        (lambda t: t.replace("[grid]\n", "[grid]\nstepz = 3\n"), "[grid] stepz must be a non-empty list"),
    ],
    ids=["no-budget", "typo-in-third-variant", "unknown-schedule", "unknown-eval-sampler", "grid-and-variants",
         "bad-architecture", "grid-value-not-a-list"],
)
def test_every_variant_is_checked_before_anything_is_written(tmp_path, edit, message) -> None:
    path = write_tiny_sweep(tmp_path, edit(TINY_SWEEP))
    with pytest.raises(TinyDiffError, match=None) as info:
        load_sweep(path)
    assert message in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-sweep.toml"]


def figures(out: Path, name: str) -> dict:
    report = json.loads((out / name / "eval.json").read_text())
    return {k: report[k] for k in FIGURES}


def test_a_sweep_trains_and_evaluates_every_variant_as_a_normal_run(tiny_sweep) -> None:
    state = json.loads((tiny_sweep / "sweep.json").read_text())
    assert [v["name"] for v in state["variants"]] == ["linear", "cosine"]
    assert state["variants"][1]["changes"] == {"schedule.name": ["linear", "cosine"]}
    for name in ("linear", "cosine"):
        run = tiny_sweep / name
        assert [s for s, _ in list_checkpoints(run)] == [5, 10]
        assert json.loads((run / "config.json").read_text())["config"]["schedule"]["name"] == name
        report = json.loads((run / "eval.json").read_text())
        assert report["step"] == 10 and report["num_images"] == 20 and report["settings"]["num_per_digit"] == 2
        assert report["mnist_fd"] > 0 and 0 <= report["confidence"] <= 1
    assert figures(tiny_sweep, "linear") != figures(tiny_sweep, "cosine"), "the schedule changes the model"


class Interrupt(Exception):
    pass


def test_a_killed_sweep_run_again_ends_with_the_same_figures(tmp_path, tiny_sweep) -> None:
    """Interrupted after the first checkpoint of its second variant, the same call continues and ends as the uninterrupted sweep."""
    path, out = write_tiny_sweep(tmp_path), tmp_path / "out"

    def die_in_the_second_variant(event):
        if event.get("variant") == "cosine" and event["event"] == "checkpoint" and event["step"] == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_sweep(load_sweep(path), out, callback=die_in_the_second_variant)
    assert [s for s, _ in list_checkpoints(out / "cosine")] == [5] and not (out / "linear" / "eval.json").exists()
    first = (out / "linear" / "checkpoints" / "step-000010" / "model.safetensors").stat().st_mtime_ns

    events = []
    run_sweep(load_sweep(path), out, callback=events.append)
    assert [e["status"] for e in events if e["event"] == "variant"] == ["trained", "resumable"]
    assert [e["step"] for e in events if e["event"] == "start"] == [5], "only the interrupted variant trains, from its checkpoint"
    assert (out / "linear" / "checkpoints" / "step-000010" / "model.safetensors").stat().st_mtime_ns == first, "finished runs are kept"
    for name in ("linear", "cosine"):
        for file in ("model.safetensors", "training_state.safetensors"):
            a = (tiny_sweep / name / "checkpoints" / "step-000010" / file).read_bytes()
            assert a == (out / name / "checkpoints" / "step-000010" / file).read_bytes(), (name, file)
        assert figures(out, name) == figures(tiny_sweep, name), name
        assert [m["step"] for m in read_metrics(out / name)] == [5, 10], "metrics continue from the checkpoint"

    events.clear()
    run_sweep(load_sweep(path), out, callback=events.append)
    assert [e["status"] for e in events if e["event"] == "variant"] == ["evaluated", "evaluated"]
    assert not [e for e in events if e["event"] in ("start", "evaluate")], "a finished sweep run again does nothing"


def test_a_sweep_folder_trained_with_other_settings_is_refused(tmp_path, tiny_sweep) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(tiny_sweep, out)
    changed = write_tiny_sweep(tmp_path, TINY_SWEEP.replace("warmup_steps = 5", "warmup_steps = 6"))
    with pytest.raises(TinyDiffError, match=r"linear was trained with train.warmup_steps = 5, but the sweep now gives 6"):
        run_sweep(load_sweep(changed), out)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(TinyDiffError, match="not a sweep folder"):
        run_sweep(load_sweep(changed), tmp_path / "other")


def test_a_sweep_folder_from_before_a_key_was_added_is_still_finished(tmp_path, tiny_sweep) -> None:
    """Upgrading tinydiff neither refuses nor re-evaluates a finished sweep: a missing key is at its default."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(tiny_sweep, out)
    for name in ("linear", "cosine"):  # as an older tinydiff wrote them, without the newest keys
        record = json.loads((out / name / "config.json").read_text())
        del record["config"]["train"]["cpu_bf16"]
        (out / name / "config.json").write_text(json.dumps(record))
        report = json.loads((out / name / "eval.json").read_text())
        del report["settings"]["spacing"]
        (out / name / "eval.json").write_text(json.dumps(report))
    events = []
    run_sweep(load_sweep(write_tiny_sweep(tmp_path)), out, callback=events.append)
    assert [e["status"] for e in events if e["event"] == "variant"] == ["evaluated", "evaluated"]
    assert not [e for e in events if e["event"] in ("start", "evaluate")]


def test_a_larger_budget_extends_every_variant(tmp_path, tiny_sweep) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(tiny_sweep, out)
    longer = write_tiny_sweep(tmp_path, TINY_SWEEP.replace("steps = 10", "steps = 15", 1))
    events = []
    run_sweep(load_sweep(longer), out, callback=events.append)
    assert [e["status"] for e in events if e["event"] == "variant"] == ["resumable", "resumable"]
    assert [json.loads((out / n / "eval.json").read_text())["step"] for n in ("linear", "cosine")] == [15, 15]


@pytest.mark.parametrize("name, variants", [("schedules.toml", ["linear", "cosine", "sigmoid"]),
                                            ("milestones.toml", ["stage1", "stage2", "stage3", "stage4"])])
def test_the_shipped_examples_load(name, variants) -> None:
    sweep = load_sweep(REPO / "examples" / name)
    assert [v.name for v in sweep.variants] == variants
    same_steps = len({v.config.train.steps for v in sweep.variants}) == 1
    same_minutes = len({v.config.train.max_minutes for v in sweep.variants}) == 1 and sweep.variants[0].config.train.max_minutes
    assert same_steps or same_minutes, "one budget for all: the same steps, or the same minutes"


def test_the_sweep_command_lists_trains_evaluates_and_compares(tmp_path, data_dir, monkeypatch) -> None:
    from typer.testing import CliRunner

    from tinydiff.cli import app

    runner = CliRunner(env={"COLUMNS": "250"})
    monkeypatch.chdir(tmp_path)
    path = write_tiny_sweep(tmp_path, TINY_SWEEP.replace("steps = 10", "steps = 5", 1).replace("eval_every = 5\n", ""))
    dry = runner.invoke(app, ["sweep", str(path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "2 variants of stage3 (steps 5) into runs/tiny-sweep" in dry.stdout
    assert "schedule.name 'linear' -> 'cosine'" in dry.stdout and "nothing (the base)" in dry.stdout
    assert not (tmp_path / "runs").exists(), "a dry run writes nothing"

    result = runner.invoke(app, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    out = Path("runs") / "tiny-sweep"  # the default --out, beside the working directory
    for name in ("linear", "cosine"):
        assert f"{name}: training 0." in result.stderr and f"into {out / name}" in result.stderr
        assert re.search(rf"{name}: MNIST-FD [\d.]+ \([\d.]+x the floor\), confidence", result.stderr)
    assert "sweep" in result.stderr and "2/2 variants trained" in result.stderr, "one overall progress display"
    assert "schedule.name" in result.stdout and "5/5" in result.stdout, "the comparison table"
    assert (out / "report.html").is_file() and f"report in {out / 'report.html'}" in result.stderr

    again = runner.invoke(app, ["sweep", str(path)])
    assert again.exit_code == 0, again.output
    assert again.stderr.count("trained already, kept") == 2 and ": training" not in again.stderr


def test_sweep_help_shows_the_table_names_of_its_file(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line of help text, not wrapped
    code, out, _ = run_cli(["sweep", "--help"], capsys, strip_colour=True)
    assert code == 0 and "a [grid] or [variants.NAME] table, [eval]" in out  # not taken for terminal markup
