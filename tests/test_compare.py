"""Comparing runs: only the keys that differ, training time and speed from the metrics, the latest evaluation, JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tinydiff.cli import app
from tinydiff.compare import collect_runs, compare_runs, table
from tinydiff.errors import TinyDiffError

runner = CliRunner()


def fake_run(root: Path, name: str, *, lr: float, schedule: str, metrics: list[dict], evaluation: dict | None = None) -> Path:
    """A run directory as training leaves it: config.json, metrics.jsonl and, after a sweep, eval.json."""
    run = root / name
    run.mkdir(parents=True)
    config = {"preset": "stage3", "schedule": {"name": schedule, "num_timesteps": 1000},
              "train": {"steps": 100, "batch_size": 64, "lr": lr, "seed": 0}}  # fmt: skip
    (run / "config.json").write_text(json.dumps({"config": config}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if evaluation is not None:
        (run / "eval.json").write_text(json.dumps(evaluation))
    return run


LINES = [
    {"step": 50, "loss": 0.2, "img_per_s": 100.0, "seconds": 32.0},
    {"step": 100, "loss": 0.1, "img_per_s": 200.0, "seconds": 16.0,
     "eval_accuracy": 0.5, "eval_mnist_fd": 40.0, "eval_mnist_fd_floor": 8.0, "eval_fd_ratio": 5.0, "eval_confidence": 0.9},
]  # fmt: skip
FULL_EVAL = {"step": 100, "accuracy": 0.75, "min_digit_accuracy": 0.5, "mnist_fd": 6.0, "mnist_fd_floor": 2.0,
             "fd_ratio": 3.0, "confidence": 0.95, "num_images": 1000, "seconds": 9.0}  # fmt: skip


@pytest.fixture
def two_runs(tmp_path) -> list[Path]:
    return [fake_run(tmp_path, "a", lr=1e-3, schedule="linear", metrics=LINES),
            fake_run(tmp_path, "b", lr=1e-3, schedule="cosine", metrics=LINES, evaluation=FULL_EVAL)]  # fmt: skip


def test_only_the_config_keys_that_differ_are_shown(two_runs) -> None:
    comparison = compare_runs(two_runs)
    assert comparison["differs"] == ["schedule.name"]
    assert [r["differs"] for r in comparison["runs"]] == [{"schedule.name": "linear"}, {"schedule.name": "cosine"}]
    header, rows = table(comparison)
    assert header[:2] == ["run", "schedule.name"] and "train.lr" not in header
    assert rows[0][:4] == ["a", "linear", "100/100", "48s"]


def test_training_time_and_speed_come_from_the_metrics_intervals(two_runs) -> None:
    run = compare_runs(two_runs)["runs"][0]
    assert run["train_seconds"] == 48.0 and run["curve"]["seconds"] == [32.0, 48.0]
    assert run["img_per_s"] == pytest.approx((100 * 32 + 200 * 16) / 48), "the time-weighted mean: all images over all time"
    assert run["loss"] == 0.1 and run["step"] == 100


def test_older_runs_get_their_time_from_images_per_second(tmp_path) -> None:
    lines = [{k: v for k, v in m.items() if k != "seconds"} for m in LINES]
    run = compare_runs([fake_run(tmp_path, "old", lr=1e-3, schedule="linear", metrics=lines)])["runs"][0]
    assert run["curve"]["seconds"] == pytest.approx([50 * 64 / 100, 50 * 64 / 100 + 50 * 64 / 200])


def test_the_latest_evaluation_is_the_newer_of_eval_json_and_the_eval_every_lines(two_runs, tmp_path) -> None:
    a, b = compare_runs(two_runs)["runs"]
    assert a["eval"]["source"] == "metrics.jsonl" and a["eval"]["fd_ratio"] == 5.0 and a["eval"]["accuracy"] == 0.5
    assert b["eval"]["source"] == "eval.json" and b["eval"]["min_digit_accuracy"] == 0.5, "at the same step the full evaluation wins"
    _, rows = table(compare_runs(two_runs))
    assert rows[1][-5:] == ["75.0%", "50.0%", "6.00 (3.00x)", "95.0%", "step 100, N=1000"]
    later = LINES + [{**LINES[1], "step": 150, "eval_fd_ratio": 4.0}]
    c = compare_runs([fake_run(tmp_path, "c", lr=1e-3, schedule="linear", metrics=later, evaluation=FULL_EVAL)])["runs"][0]
    assert c["eval"]["step"] == 150 and c["eval"]["fd_ratio"] == 4.0, "a later --eval-every line beats an older eval.json"


def test_a_sweep_folder_lists_its_variants_in_order(tiny_sweep) -> None:
    assert [r.name for r in collect_runs([tiny_sweep])] == ["linear", "cosine"]
    assert [r.name for r in collect_runs([tiny_sweep / "cosine", tiny_sweep])] == ["cosine", "linear"], "each run once"
    with pytest.raises(TinyDiffError, match="holds no run directory"):
        collect_runs([tiny_sweep / "linear" / "samples"])
    with pytest.raises(TinyDiffError, match="does not exist"):
        collect_runs([tiny_sweep / "nope"])


def test_compare_prints_the_table_and_the_same_content_as_json(tiny_sweep) -> None:
    result = runner.invoke(app, ["compare", str(tiny_sweep)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "schedule.name" in result.stdout and "train.lr" not in result.stdout
    assert any("linear" in line and "10/10" in line for line in lines) and any("cosine" in line for line in lines)
    data = json.loads(runner.invoke(app, ["compare", str(tiny_sweep), "--json"]).stdout)
    assert data["differs"] == ["schedule.name"]
    for run in data["runs"]:
        figures = json.loads((tiny_sweep / run["name"] / "eval.json").read_text())
        assert run["eval"]["mnist_fd"] == figures["mnist_fd"] and run["eval"]["source"] == "eval.json"
        assert run["step"] == 10 and run["img_per_s"] > 0 and run["train_seconds"] > 0
        assert f"{run['eval']['mnist_fd']:.2f} ({run['eval']['fd_ratio']:.2f}x)" in result.stdout


def test_compare_without_a_report_loads_neither_torch_nor_matplotlib(tiny_sweep) -> None:
    code = (
        "import sys\nfrom tinydiff.cli import main\n"
        f"try:\n    main(['compare', {str(tiny_sweep)!r}, '--json'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
