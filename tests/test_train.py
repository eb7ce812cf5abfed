"""Training on real MNIST: the loss falls, the run directory is complete, resume continues exactly."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tinydiff.checkpoint import list_checkpoints
from tinydiff.errors import TinyDiffError
from tinydiff.tracking import read_metrics
from tinydiff.train import learning_rate, train


def test_loss_falls_clearly_on_mnist(tmp_path, tiny_config, data_dir) -> None:
    config = tiny_config(steps=100, batch_size=16, log_every=10, sample_every=100, checkpoint_every=100, lr=2e-3)
    config.model = config.model.model_copy(update={"attention_resolutions": []})  # the convolutions learn first; fast
    result = train(config, tmp_path / "run")
    losses = [m["loss"] for m in read_metrics(tmp_path / "run")]
    assert len(losses) == 10
    assert losses[0] > 0.3, "an untrained epsilon-predictor is far off"
    assert losses[-1] < 0.3 * losses[0], f"loss did not fall clearly: {losses}"
    assert result.loss == losses[-1]


def test_run_directory_is_complete(tmp_path, tiny_config, data_dir) -> None:
    run = tmp_path / "run"
    train(tiny_config(steps=20), run, command=["tinydiff", "train"])
    record = json.loads((run / "config.json").read_text())
    assert record["command"] == ["tinydiff", "train"]
    assert record["config"]["train"]["steps"] == 20 and record["versions"]["tinydiff"]
    assert "git_commit" in record
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [5, 10, 15, 20]
    assert set(metrics[0]) >= {"step", "loss", "lr", "img_per_s", "grad_norm"}
    assert [s for s, _ in list_checkpoints(run)] == [10, 20]
    for _, folder in list_checkpoints(run):
        assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "training_state.safetensors"}
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-000010.png", "step-000020.png"]
    from tinydiff.images import decode_png

    sheet = decode_png((run / "evolution.png").read_bytes())
    snap = decode_png((run / "samples" / "step-000010.png").read_bytes())
    assert sheet.shape[1] > 2 * snap.shape[1], "the evolution sheet puts the snapshots side by side"
    assert not list(run.rglob(".tmp-*")), "no temporary folders left"


def test_the_checkpoint_holds_ema_weights(tmp_path, tiny_config, data_dir) -> None:
    result = train(tiny_config(steps=10), tmp_path / "run")
    ema = load_file(str(result.checkpoint / "model.safetensors"))
    raw = {k[len("model/"):]: v for k, v in load_file(str(result.checkpoint / "training_state.safetensors")).items() if k.startswith("model/")}
    assert ema.keys() == raw.keys()
    assert any(not torch.equal(ema[k], raw[k]) for k in ema), "sampling weights are the EMA, not the raw weights"


class Interrupt(Exception):
    pass


def test_resume_continues_exactly(tmp_path, tiny_config, data_dir) -> None:
    """Interrupted after its step-10 checkpoint and resumed, a run ends bit-identical to an uninterrupted one."""
    config = tiny_config(steps=20)
    straight = train(config, tmp_path / "straight")

    def die_after_first_checkpoint(event):
        if event["event"] == "checkpoint" and event["step"] == 10:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(config, tmp_path / "resumed", callback=die_after_first_checkpoint)
    assert [s for s, _ in list_checkpoints(tmp_path / "resumed")] == [10]
    events = []
    resumed = train(config, tmp_path / "resumed", resume=True, callback=events.append)
    assert events[0]["event"] == "start" and events[0]["step"] == 10
    assert resumed.step == 20
    for name in ("model.safetensors", "training_state.safetensors"):
        assert (straight.checkpoint / name).read_bytes() == (resumed.checkpoint / name).read_bytes(), name
    assert [m["step"] for m in read_metrics(tmp_path / "resumed")] == [5, 10, 15, 20]
    record = json.loads((tmp_path / "resumed" / "config.json").read_text())
    assert record["resumes"][0]["step"] == 10


def test_resume_needs_a_checkpoint_and_a_new_run_needs_a_fresh_directory(tmp_path, tiny_config, data_dir) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(TinyDiffError, match="holds no checkpoint"):
        train(tiny_config(), tmp_path / "empty", resume=True)
    train(tiny_config(steps=10), tmp_path / "run")
    with pytest.raises(TinyDiffError, match="already holds a run; pass --resume"):
        train(tiny_config(steps=10), tmp_path / "run")


def test_learning_rate_warms_up_then_decays(tiny_config) -> None:
    config = tiny_config(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    lrs = [learning_rate(s, config) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(1e-4, rel=0.01)


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_config, data_dir, monkeypatch) -> None:
    from tinydiff import train as train_module

    real_loss = train_module.training_loss

    def poisoned(model, x0, t, noise, schedule, **kwargs):
        loss = real_loss(model, x0, t, noise, schedule, **kwargs)
        return loss * float("nan") if poisoned.calls >= 12 else loss

    def counting(*args, **kwargs):
        poisoned.calls += 1
        return poisoned(*args, **kwargs)

    poisoned.calls = 0
    monkeypatch.setattr(train_module, "training_loss", counting)
    with pytest.raises(TinyDiffError, match=r"non-finite by step 15; the last good checkpoint is .*step-000010"):
        train(tiny_config(steps=20), tmp_path / "run")
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [10]


def test_eval_every_logs_quality_figures(tmp_path, tiny_config, data_dir) -> None:
    from typer.testing import CliRunner

    from tinydiff.cli import app

    train(tiny_config(steps=10, eval_every=5, eval_num_per_digit=2, eval_steps=2), tmp_path / "run")
    evaluated = [m for m in read_metrics(tmp_path / "run") if "eval_mnist_fd" in m]
    assert [m["step"] for m in evaluated] == [5, 10]
    assert all(m["eval_mnist_fd"] > 0 and m["eval_fd_ratio"] > 0 and m["eval_nfe"] == 2 for m in evaluated)
    assert "eval_accuracy" not in evaluated[0], "an unconditional model has no prompt accuracy"
    info = json.loads(CliRunner().invoke(app, ["inspect", str(tmp_path / "run"), "--json"]).stdout)
    assert [e["step"] for e in info["eval"]] == [5, 10]


def test_max_minutes_stops_early_with_a_final_checkpoint(tmp_path, tiny_config, data_dir) -> None:
    run = tmp_path / "run"
    result = train(tiny_config(steps=100_000, max_minutes=0.0005, checkpoint_every=50_000, sample_every=50_000), run)
    assert 1 <= result.step < 100_000, "a 30 ms budget ends long before 100k steps"
    assert [s for s, _ in list_checkpoints(run)] == [result.step]  # the last step always checkpoints
    assert read_metrics(run)[-1]["step"] == result.step


def test_channels_last_trains_the_same_model(tmp_path, tiny_config, data_dir) -> None:
    from tinydiff.train import Trainer

    plain, nhwc = (Trainer(tiny_config(channels_last=flag), tmp_path / str(flag)) for flag in (False, True))
    assert nhwc.model.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        a, b = plain.train_step(), nhwc.train_step()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for p, q in zip(plain.ema.parameters(), nhwc.ema.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
