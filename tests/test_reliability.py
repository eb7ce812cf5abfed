"""Training survives kill -9: resume from the newest complete checkpoint ends bit-identical."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tinydiff.checkpoint import list_checkpoints
from tinydiff.train import train


def tinydiff(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tinydiff", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "100"})  # fmt: skip


def test_sigkill_after_the_second_checkpoint_then_resume_is_bit_identical(tmp_path, tiny_toml, data_dir) -> None:
    common = ["--config", tiny_toml.name, "--steps", "40", "--batch-size", "16", "--device", "cpu",
              "--checkpoint-every", "10", "--sample-every", "1000"]  # fmt: skip
    started: list[subprocess.Popen] = []
    try:
        started.append(straight := tinydiff("train", *common, "--run-dir", "straight", cwd=tmp_path))
        started.append(victim := tinydiff("train", *common, "--run-dir", "killed", cwd=tmp_path))
        deadline = time.monotonic() + 300
        while not (tmp_path / "killed" / "checkpoints" / "step-000020").is_dir():
            assert victim.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no second checkpoint within 300 s"
            time.sleep(0.005)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert victim.returncode == -signal.SIGKILL
        done = [s for s, _ in list_checkpoints(tmp_path / "killed")]
        assert 20 in done and 40 not in done

        started.append(resumed := tinydiff("train", "--resume", "--run-dir", "killed", "--steps", "40", cwd=tmp_path))
        for proc in (straight, resumed):
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err.decode()
    finally:  # a failed assertion leaves no training process behind
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name in ("model.safetensors", "training_state.safetensors"):
        a = (tmp_path / "straight" / "checkpoints" / "step-000040" / name).read_bytes()
        b = (tmp_path / "killed" / "checkpoints" / "step-000040" / name).read_bytes()
        assert a == b, f"{name} differs after kill -9 and resume"


def test_resume_ignores_half_written_checkpoints(tmp_path, tiny_config, data_dir) -> None:
    run = tmp_path / "run"
    train(tiny_config(steps=20), run)
    ckpt = run / "checkpoints"
    partial = ckpt / ".tmp-step-000030-abc"  # a write interrupted before its rename
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00" * 10)
    incomplete = ckpt / "step-000040"  # a folder without its weights
    incomplete.mkdir()
    (incomplete / "config.json").write_text("{")
    no_state = ckpt / "step-000050"  # a model folder without training state is not resumable
    (no_state).mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_state / name).write_bytes((ckpt / "step-000020" / name).read_bytes())
    events = []
    result = train(tiny_config(steps=30), run, resume=True, callback=events.append)
    assert events[0]["step"] == 20 and result.step == 30


def test_a_truncated_newest_checkpoint_is_a_clear_error(tmp_path, tiny_config, data_dir) -> None:
    from tinydiff.errors import TinyDiffError

    run = tmp_path / "run"
    train(tiny_config(steps=20), run)
    state = run / "checkpoints" / "step-000020" / "training_state.safetensors"
    state.write_bytes(state.read_bytes()[:1000])
    with pytest.raises(TinyDiffError, match="truncated or corrupted"):
        train(tiny_config(steps=30), run, resume=True)


def test_keep_checkpoints_prunes_the_oldest(tmp_path, tiny_config, data_dir) -> None:
    run = tmp_path / "run"
    train(tiny_config(steps=40, checkpoint_every=10, keep_checkpoints=2), run)
    assert [s for s, _ in list_checkpoints(run)] == [30, 40]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000030", "step-000040"]
    events = []
    train(tiny_config(steps=50, checkpoint_every=10, keep_checkpoints=2), run, resume=True, callback=events.append)
    assert events[0]["step"] == 40 and [s for s, _ in list_checkpoints(run)] == [40, 50]
