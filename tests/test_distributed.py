"""DDP under torchrun, on CPU with gloo: N processes with batch B train like one process with batch N x B."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")

# one training step, then rank 0 saves the gradients and the updated weights
HELPER = """
import json, sys
from safetensors.torch import save_file
from tinydiff.config import resolve_config
from tinydiff.distributed import Distributed
from tinydiff.train import Trainer
overrides, run_dir, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
dist = Distributed.from_env()
trainer = Trainer(resolve_config("stage3", None, overrides), run_dir, dist)
loss = trainer.train_step()
tensors = {"grad/" + n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()}
tensors.update({"weight/" + n: p.detach().clone() for n, p in trainer.model.named_parameters()})
tensors["loss"] = dist.mean(loss)
if dist.is_main:
    save_file({k: v.contiguous() for k, v in tensors.items()}, out)
del trainer  # its DDP wrapper holds the process group
dist.close()
"""


def _env(tmp_path: Path) -> dict[str, str]:
    # TMPDIR: torchrun's rendezvous folders (torchelastic_*) go under the test's own folder, not /tmp
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp_path)}
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def _torchrun(nproc: int, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", "0",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=240, cwd=tmp_path)


def _overrides(batch_size: int) -> dict:
    o = tiny_overrides(batch_size=batch_size)
    o["model"].update(cross_attention_resolutions=[14], text={"dim": 32, "layers": 1, "heads": 2})
    return o


def test_two_processes_compute_the_gradients_of_one_process_with_the_doubled_batch(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    helper = tmp_path / "one_step.py"
    helper.write_text(HELPER)
    two = _torchrun(2, [str(helper), json.dumps(_overrides(8)), str(tmp_path / "r2"), str(tmp_path / "two.safetensors")], tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(helper), json.dumps(_overrides(16)), str(tmp_path / "r1"), str(tmp_path / "one.safetensors")],
                         capture_output=True, text=True, env=_env(tmp_path), timeout=240)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    assert set(a) == set(b)
    assert torch.allclose(a["loss"], b["loss"], rtol=1e-5, atol=1e-6)
    grads = [k for k in a if k.startswith("grad/")]
    assert len(grads) > 20 and any(k.startswith("grad/text_encoder") for k in grads)  # the prompt path is trained too
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-6), key
    assert any(a[k].abs().max() > 0 for k in grads)


def test_torchrun_without_run_dir_is_one_line_error(tmp_path: Path, tiny_toml: Path) -> None:
    env = {**_env(tmp_path), "WORLD_SIZE": "2", "RANK": "0"}
    done = subprocess.run([sys.executable, "-m", "tinydiff", "train", "--config", str(tiny_toml)],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error:") and "--run-dir" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()
