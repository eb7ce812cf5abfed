"""The CPU time-to-quality benchmark runs end to end in its smoke mode: a real `tinydiff train` run and the diffusers baseline.

A file of its own, a heavy smoke test, so that parallel test workers can share the benchmarks' load.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_benchmarks import run_bench


def test_cpu_time_to_quality_smoke(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    done = run_bench("cpu_time_to_quality.py", "--smoke", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    arms = {r["arm"]: r for r in result["rows"]}
    assert set(arms) == {"TinyDiff laptop", "diffusers UNet2DModel"}
    assert arms["diffusers UNet2DModel"]["parameters"] == 1_164_513  # the 1.16 M baseline of the CPU time-to-quality comparison, exactly
    for row in arms.values():
        assert row["nfe"] == 2 and row["num_images"] == 20 and 0 <= row["accuracy"] <= 1 and row["mnist_fd"] > 0
    assert "throughput ratio" in done.stdout
    assert (tmp_path / "out" / "tinydiff-laptop" / "checkpoints").is_dir()  # a real `tinydiff train` run
