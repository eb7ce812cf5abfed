"""Checkpoints on disk: half-written ones are ignored, pruning keeps the newest, a damaged one is a clear error.

kill -9 followed by --resume is tested, beside Ctrl-C, in test_interrupt.py.
"""

from pathlib import Path

import pytest

from tinydiff.checkpoint import list_checkpoints
from tinydiff.train import train


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
    train(tiny_config(steps=20, checkpoint_every=5, sample_every=100, keep_checkpoints=2), run)
    assert [s for s, _ in list_checkpoints(run)] == [15, 20]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000015", "step-000020"]
    events = []
    train(tiny_config(steps=25, checkpoint_every=5, sample_every=100, keep_checkpoints=2), run, resume=True, callback=events.append)
    assert events[0]["step"] == 20 and [s for s, _ in list_checkpoints(run)] == [20, 25]
