"""Every benchmark runs end to end in its smoke mode, and fails loudly when a figure cannot be measured.

No test here asserts a time: the benchmarks print ratios measured in one run (docs/performance.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))


def run_bench(name: str, *args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(BENCH / name), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_text_model(tmp_path_factory, data_dir) -> Path:
    from tinydiff.config import resolve_config
    from tinydiff.train import train

    from conftest import tiny_overrides

    overrides = tiny_overrides(steps=4, checkpoint_every=4, sample_every=4)
    overrides["model"].update(cross_attention_resolutions=[14], text={"dim": 32, "layers": 1, "heads": 2})
    run = tmp_path_factory.mktemp("bench") / "tiny-text"
    train(resolve_config("stage4", None, overrides), run)
    return run


def test_quality_vs_steps_smoke(tmp_path: Path, tiny_text_model: Path) -> None:
    done = run_bench("quality_vs_steps.py", "--smoke", "--model", str(tiny_text_model), "--out", str(tmp_path / "q"),
                     "--spacings", "uniform,logsnr", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "q" / "results.json").read_text())
    assert [(r["sampler"], r["spacing"], r["nfe"]) for r in result["rows"]] == [
        (s, g, n) for s in ("ddpm", "ddim", "dpm++") for g in ("uniform", "logsnr") for n in (2, 3)]
    assert result["reference"]["nfe"] == 4
    assert (tmp_path / "q" / "quality_vs_steps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cpu_bf16_smoke(tmp_path: Path, data_dir) -> None:
    done = run_bench("cpu_bf16.py", "--smoke", "--data-dir", str(data_dir), "--out", str(tmp_path / "b"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads((tmp_path / "b" / "results.json").read_text())["rows"]
    assert row["preset"] == "stage3" and row["fp32_images_per_s"] > 0 and row["bf16_images_per_s"] > 0


def test_quality_vs_steps_bad_steps_fail_loudly(tmp_path: Path) -> None:
    done = run_bench("quality_vs_steps.py", "--steps", "5,ten", cwd=tmp_path)
    assert done.returncode == 1 and "--steps" in done.stderr and "Traceback" not in done.stderr


def test_cli_latency_smoke(tmp_path: Path, tiny_text_model: Path) -> None:
    out = tmp_path / "latency.json"
    done = run_bench("cli_latency.py", "--smoke", "--model", str(tiny_text_model), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["command"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["python -c 'import torch'"]["ratio_to_import_torch"] == 1.0
    assert all(r["median_s"] > 0 for r in rows.values()) and len(rows) == 5
    assert rows["python -c 'import torch; os._exit(0)'"]["met"] is None  # printed for comparison, no target


def test_a_figure_that_cannot_be_measured_stops_the_benchmark(capsys) -> None:
    from _common import check_finite

    assert check_finite("fine", 1.5) == 1.5
    for bad in (float("nan"), float("inf"), None):
        with pytest.raises(SystemExit) as exc:
            check_finite("MNIST-FD", bad)
        assert exc.value.code == 1
    assert "benchmark failed: MNIST-FD came out as" in capsys.readouterr().err


def test_cpu_time_to_quality_rejects_unknown_arms(tmp_path: Path) -> None:
    done = run_bench("cpu_time_to_quality.py", "--arms", "tinydiff,keras", cwd=tmp_path)
    assert done.returncode == 1 and "--arms" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("preset", ["stage1", "stage2", "stage3", "stage4", "laptop", "gpu"])
def test_every_preset_builds_and_trains_a_step(preset: str, tmp_path: Path, data_dir) -> None:
    import torch

    from tinydiff.config import resolve_config
    from tinydiff.train import Trainer

    config = resolve_config(preset, None, {"train": {"batch_size": 4, "device": "cpu"}})
    trainer = Trainer(config, tmp_path / "run")
    before = [p.detach().clone() for p in trainer.model.parameters()]
    loss, grad_norm = trainer.train_step().tolist()
    assert trainer.step == 1 and loss > 0 and grad_norm > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))



def test_number_canvas_smoke(tmp_path: Path) -> None:
    done = run_bench("number_canvas.py", "--smoke", "--out", str(tmp_path / "n"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((tmp_path / "n" / "results.json").read_text())["rows"]
    assert [r["digits"] for r in rows] == [1, 2] and rows[0]["vs_single_digit"] == 1.0
    assert rows[1]["prompt"] == "the number 25" and rows[1]["seconds"] > 0 and "vs k digits" in done.stdout
