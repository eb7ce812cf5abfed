"""Ctrl-C on a two-process `torchrun` training: the ranks agree on the step, rank 0 saves, the resumed run is bit-identical.

The uninterrupted run it is compared with also shows that rank 0 alone writes a torchrun run.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tinydiff.checkpoint import list_checkpoints


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path), "COLUMNS": "200"}
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def _torchrun(args: list[str], tmp_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0", "-m", "tinydiff", *args]  # fmt: skip
    # a session of its own: Ctrl-C in a terminal signals the launcher and every worker, as killpg does here
    return subprocess.Popen(cmd, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip


def test_ctrl_c_under_torchrun_saves_once_and_resumes_bit_identical(tmp_path, tiny_toml, data_dir) -> None:
    command = ["train", "--config", str(tiny_toml), "--steps", "30", "--batch-size", "8", "--device", "cpu",
               "--checkpoint-every", "2", "--keep-checkpoints", "1", "--sample-every", "1000"]  # fmt: skip
    victim = _torchrun([*command, "--run-dir", "stopped"], tmp_path)
    deadline = time.monotonic() + 120
    while not list_checkpoints(tmp_path / "stopped"):
        assert victim.poll() is None, victim.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.005)
    os.killpg(victim.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    _, err = victim.communicate(timeout=120)
    err = err.decode()
    stopped_at = [s for s, _ in list_checkpoints(tmp_path / "stopped")]
    assert len(stopped_at) == 1 and stopped_at[0] < 30, (stopped_at, err[-3000:])
    assert err.count("interrupted at step") == 1, err[-3000:]  # rank 0 alone reports
    assert f"interrupted at step {stopped_at[0]}; checkpoint saved; resume with: torchrun --nproc_per_node 2 -m tinydiff train --run-dir stopped --resume" in err
    assert "interrupted again" not in err  # the launcher forwarding the same Ctrl-C is not a second one
    assert not (tmp_path / "stopped" / ".lock").exists()

    straight = _torchrun([*command, "--run-dir", "straight"], tmp_path)
    _, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err.decode()[-3000:]
    # rank 0 alone writes the run: one metrics line a logged step, one final line, one checkpoint kept
    steps = [json.loads(line)["step"] for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 31, 5)), steps
    assert err.decode().count("done: step 30") == 1
    assert [s for s, _ in list_checkpoints(tmp_path / "straight")] == [30]
    resumed = _torchrun([*command, "--run-dir", "stopped", "--resume"], tmp_path)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()[-3000:]
    assert f"resuming at step {stopped_at[0]}" in err.decode()
    for name in ("model.safetensors", "training_state.safetensors"):
        a = (tmp_path / "straight" / "checkpoints" / "step-000030" / name).read_bytes()
        b = (tmp_path / "stopped" / "checkpoints" / "step-000030" / name).read_bytes()
        assert a == b, f"{name} differs after Ctrl-C under torchrun and resume"
