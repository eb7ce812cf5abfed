"""The GPU benchmark runs end to end at tiny sizes on the CPU, and without a GPU fails loudly.

A file of its own, the heaviest smoke test, so that parallel test workers can share the benchmarks' load.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_benchmarks import run_bench


def test_gpu_throughput_smoke_on_cpu(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    done = run_bench("gpu_throughput.py", "--smoke", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = result["rows"]
    assert rows[0]["arm"].startswith("diffusers") and rows[0]["ratio_to_diffusers"] == 1.0
    assert all(r["img_per_s"] > 0 and r["gflop_per_image"] > 0 and r["mfu"] is None for r in rows)  # no MFU on CPU
    assert {"accuracy", "mnist_fd", "fd_ratio", "nfe"} <= set(result["time_to_quality"])


def test_gpu_throughput_without_a_gpu_fails_loudly(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = run_bench("gpu_throughput.py", "--skip-quality", cwd=tmp_path)
    assert done.returncode == 1 and "no CUDA GPU" in done.stderr and "Traceback" not in done.stderr
