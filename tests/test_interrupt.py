"""Ctrl-C on a real `tinydiff train` process: it saves, says how to resume, and the resumed run is bit-identical."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tinydiff.checkpoint import list_checkpoints
from tinydiff.cli import main


def tinydiff(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tinydiff", *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})  # fmt: skip


def test_sigint_saves_the_run_and_the_original_command_plus_resume_ends_bit_identical(
    tmp_path, tiny_toml, data_dir, monkeypatch, capsys
) -> None:
    from tinydiff.train import train as _  # noqa: F401  (imported now, so the in-process check below is instant)

    command = ["train", "--config", tiny_toml.name, "--steps", "40", "--batch-size", "16", "--device", "cpu",
               "--checkpoint-every", "1000", "--sample-every", "1000"]  # fmt: skip
    straight = tinydiff(*command, "--run-dir", "straight", cwd=tmp_path)
    victim = tinydiff(*command, "--run-dir", "stopped", cwd=tmp_path)
    metrics = tmp_path / "stopped" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text()):  # the first log line (step 5): training is under way
        assert victim.poll() is None, victim.stderr.read().decode()
        assert time.monotonic() < deadline, "no metrics line within 120 s"
        time.sleep(0.005)

    # a second `tinydiff train` on the same run directory meanwhile: one line naming the first one's PID
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    try:
        main(["train", "--config", tiny_toml.name, "--run-dir", "stopped", "--device", "cpu"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert f"in use by another tinydiff train (process {victim.pid})" in err

    victim.send_signal(signal.SIGINT)
    _, err = victim.communicate(timeout=120)
    err = err.decode()
    assert victim.returncode == 130, err
    assert "Traceback" not in err
    stopped_at = [s for s, _ in list_checkpoints(tmp_path / "stopped")]
    assert len(stopped_at) == 1 and 5 <= stopped_at[0] < 40, stopped_at  # the step it was on, not a scheduled one
    last = err.strip().splitlines()[-1]
    assert last == f"interrupted at step {stopped_at[0]}; checkpoint saved; resume with: tinydiff train --run-dir stopped --resume"
    assert not (tmp_path / "stopped" / ".lock").exists()
    assert json.loads(metrics.read_text().splitlines()[-1])["step"] == stopped_at[0]

    resumed = tinydiff(*command, "--run-dir", "stopped", "--resume", cwd=tmp_path)  # as people type it
    for proc in (straight, resumed):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    assert f"resuming at step {stopped_at[0]}" in err.decode()
    for name in ("model.safetensors", "training_state.safetensors"):
        a = (tmp_path / "straight" / "checkpoints" / "step-000040" / name).read_bytes()
        b = (tmp_path / "stopped" / "checkpoints" / "step-000040" / name).read_bytes()
        assert a == b, f"{name} differs after Ctrl-C and resume"
