"""A real `tinydiff train` process stopped by Ctrl-C, or killed with kill -9, resumes bit-identical to a run never stopped.

Ctrl-C saves the step it was on and says how to resume; kill -9 loses only what came after the
newest complete checkpoint. Both runs are compared with one uninterrupted run, trained beside them.
"""

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


def wait_for(path_ready, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path_ready():
        assert proc.poll() is None, f"the run ended before {what}: " + proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.005)


def test_ctrl_c_and_kill_9_then_resume_end_bit_identical_to_a_run_never_stopped(
    tmp_path, tiny_toml, data_dir, monkeypatch, capsys
) -> None:
    from tinydiff.train import train as _  # noqa: F401  (imported now, so the in-process check below is instant)

    command = ["train", "--config", tiny_toml.name, "--steps", "40", "--batch-size", "16", "--device", "cpu",
               "--sample-every", "1000"]  # fmt: skip
    started: list[subprocess.Popen] = []
    try:
        started.append(straight := tinydiff(*command, "--checkpoint-every", "10", "--run-dir", "straight", cwd=tmp_path))
        started.append(stopped := tinydiff(*command, "--checkpoint-every", "1000", "--run-dir", "stopped", cwd=tmp_path))
        started.append(killed := tinydiff(*command, "--checkpoint-every", "10", "--run-dir", "killed", cwd=tmp_path))

        # Ctrl-C once training is under way (the first log line, step 5)
        metrics = tmp_path / "stopped" / "metrics.jsonl"
        wait_for(lambda: metrics.is_file() and metrics.read_text(), stopped, "metrics line")
        # a second `tinydiff train` on the same run directory meanwhile: one line naming the first one's PID
        monkeypatch.chdir(tmp_path)
        capsys.readouterr()
        try:
            main(["train", "--config", tiny_toml.name, "--run-dir", "stopped", "--device", "cpu"])
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1, err
        assert f"in use by another tinydiff train (process {stopped.pid})" in err

        stopped.send_signal(signal.SIGINT)
        _, err = stopped.communicate(timeout=120)
        err = err.decode()
        assert stopped.returncode == 130, err
        assert "Traceback" not in err
        stopped_at = [s for s, _ in list_checkpoints(tmp_path / "stopped")]
        assert len(stopped_at) == 1 and 5 <= stopped_at[0] < 40, stopped_at  # the step it was on, not a scheduled one
        last = err.strip().splitlines()[-1]
        assert last == f"interrupted at step {stopped_at[0]}; checkpoint saved; resume with: tinydiff train --run-dir stopped --resume"
        assert not (tmp_path / "stopped" / ".lock").exists()
        assert json.loads(metrics.read_text().splitlines()[-1])["step"] == stopped_at[0]
        started.append(resumed := tinydiff(*command, "--checkpoint-every", "1000", "--run-dir", "stopped", "--resume", cwd=tmp_path))  # as people type it

        # kill -9 after the second checkpoint
        wait_for(lambda: (tmp_path / "killed" / "checkpoints" / "step-000020").is_dir(), killed, "second checkpoint")
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert killed.returncode == -signal.SIGKILL
        done = [s for s, _ in list_checkpoints(tmp_path / "killed")]
        assert 20 in done and 40 not in done
        started.append(revived := tinydiff("train", "--resume", "--run-dir", "killed", "--steps", "40", cwd=tmp_path))

        for proc in (straight, resumed, revived):
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err.decode()
            if proc is resumed:
                assert f"resuming at step {stopped_at[0]}" in err.decode()
    finally:  # a failed assertion leaves no training process behind
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for run, how in (("stopped", "Ctrl-C"), ("killed", "kill -9")):
        for name in ("model.safetensors", "training_state.safetensors"):
            a = (tmp_path / "straight" / "checkpoints" / "step-000040" / name).read_bytes()
            b = (tmp_path / run / "checkpoints" / "step-000040" / name).read_bytes()
            assert a == b, f"{name} differs after {how} and resume"
