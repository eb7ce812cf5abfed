"""The run lifecycle in-process: stop signals, resume as people type it, progress without a terminal, locks, edited files."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import warnings
import pytest

from conftest import run_cli
from tinydiff.checkpoint import list_checkpoints
from tinydiff.train import TrainingAborted, train

def _signal_at(step: int, signum: int):
    """A callback that sends this process ``signum`` once the run has finished ``step``."""

    def callback(event: dict) -> None:
        if event["event"] == "step" and event["step"] == step:
            os.kill(os.getpid(), signum)

    return callback


def _files(run: Path, step: int) -> dict[str, bytes]:
    folder = run / "checkpoints" / f"step-{step:06d}"
    return {name: (folder / name).read_bytes() for name in ("model.safetensors", "training_state.safetensors")}


def test_sigterm_stops_after_the_step_with_a_checkpoint_and_resume_is_bit_identical(tmp_path, tiny_config, data_dir) -> None:
    config = tiny_config(steps=12, checkpoint_every=1000, sample_every=1000)
    handler = signal.getsignal(signal.SIGTERM)
    stopped = train(config, tmp_path / "stopped", callback=_signal_at(7, signal.SIGTERM))  # arrives during step 8
    assert stopped.interrupted == signal.SIGTERM and stopped.step == 8
    assert signal.getsignal(signal.SIGTERM) is handler, "the previous handler is put back"
    assert [s for s, _ in list_checkpoints(tmp_path / "stopped")] == [8]
    assert not (tmp_path / "stopped" / ".lock").exists()
    assert not (tmp_path / "stopped" / "samples" / "step-000008.png").exists(), "a stop saves; it does not draw"
    resumed = train(config, tmp_path / "stopped", resume=True)
    assert resumed.step == 12 and resumed.interrupted is None
    train(config, tmp_path / "straight")
    assert _files(tmp_path / "stopped", 12) == _files(tmp_path / "straight", 12)


def test_a_second_ctrl_c_while_saving_exits_at_once_and_leaves_nothing_half_written(
    tmp_path, tiny_toml, data_dir, monkeypatch, capsys
) -> None:
    from tinydiff import checkpoint

    real_save = checkpoint.save_checkpoint

    def save_then_ctrl_c(folder, *args, **kwargs):  # the second Ctrl-C lands while the files are being written
        def files_then_signal(*a, **k):
            os.kill(os.getpid(), signal.SIGINT)
            return {}

        monkeypatch.setattr(checkpoint, "model_folder_files", files_then_signal)
        return real_save(folder, *args, **kwargs)

    monkeypatch.setattr("tinydiff.train.save_checkpoint", save_then_ctrl_c)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("tinydiff.train.train", lambda *a, **k: train(*a, **{**k, "callback": _signal_at(3, signal.SIGINT)}))
    code, out, err = run_cli(["train", "--config", str(tiny_toml), "--steps", "20", "--batch-size", "16",
                              "--device", "cpu", "--run-dir", "run", "--quiet"], capsys)  # fmt: skip
    assert code == 130
    assert err == "interrupted again: stopped at once without saving; resume from the newest checkpoint with: tinydiff train --run-dir run --resume\n"
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == []  # no step-000003, no .tmp-*
    assert not (tmp_path / "run" / ".lock").exists()


def test_plain_progress_lines_without_a_terminal_and_quiet(tmp_path, tiny_toml, data_dir, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["train", "--config", str(tiny_toml), "--steps", "10", "--batch-size", "16", "--device", "cpu",
            "--sample-every", "1000", "--checkpoint-every", "1000"]  # fmt: skip
    code, out, err = run_cli([*args, "--run-dir", "plain"], capsys)  # capsys: stderr is not a terminal, as in 2>train.log
    assert code == 0 and out == ""
    assert "\x1b" not in err and "\r" not in err
    lines = err.splitlines()
    assert lines[0] == "training 0.18M parameters on cpu into plain"
    assert [re.sub(r"loss \d\.\d{4}  \d+ img/s  ETA \w+", "loss L  N img/s  ETA T", line) for line in lines[1:3]] == [
        "step 5/10  loss L  N img/s  ETA T",  # one line every --log-every (5) steps
        "step 10/10  loss L  N img/s  ETA T",
    ]
    assert re.fullmatch(r"step 10/10  loss \d\.\d{4}  \d+ img/s  ETA 0s", lines[2])
    assert lines[3].startswith("done: step 10, loss ") and lines[4] == "next: tinydiff sample --model plain"
    assert len(lines) == 5

    code, out, err = run_cli([*args, "--run-dir", "quiet", "--quiet"], capsys)
    assert code == 0 and out == ""
    assert re.fullmatch(r"done: step 10, loss \d\.\d{4}; samples in quiet/samples, evolution in quiet/evolution.png\n", err)


def test_resume_as_people_type_it(tmp_path, tiny_toml, data_dir, monkeypatch, capsys) -> None:
    """The first command again plus --resume: agreeing flags pass, a finished run says so and records nothing,
    --steps raised extends the run and says what happens to the learning rate, a lowered one is refused."""
    monkeypatch.chdir(tmp_path)
    first = ["train", "--preset", "stage3", "--config", str(tiny_toml), "--steps", "10", "--batch-size", "16",
             "--lr", "0.001", "--seed", "0", "--conditioning", "none", "--schedule", "linear", "--device", "cpu",
             "--sample-every", "1000", "--checkpoint-every", "5", "--run-dir", "run"]  # fmt: skip
    assert run_cli(first, capsys)[0] == 0
    record = (tmp_path / "run" / "config.json").read_bytes()
    metrics = (tmp_path / "run" / "metrics.jsonl").read_bytes()

    code, out, err = run_cli([*first, "--resume"], capsys)
    assert (code, err) == (0, "run is already at step 10 of 10; raise --steps to train on\n")
    assert (tmp_path / "run" / "config.json").read_bytes() == record  # nothing recorded
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == metrics

    code, out, err = run_cli([*first, "--resume", "--steps", "15"], capsys)
    assert code == 0, err
    assert "--steps 10 -> 15: the cosine learning-rate schedule is stretched over 15 steps" in err
    assert "(resuming at step 10)" in err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["config"]["train"]["steps"] == 15 and saved["resumes"][-1]["step"] == 10

    code, out, err = run_cli([*first, "--resume"], capsys)  # the first command again asks for 10 steps: fewer than done
    assert code == 1 and err.count("\n") == 1
    assert "run is at step 15; --steps 10 would end before it. Pass --steps above 15" in err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["train"]["steps"] == 15

    code, out, err = run_cli([*first, "--resume", "--steps", "20", "--lr", "0.002"], capsys)  # --lr may change
    assert code == 0, err


def test_resume_refuses_fewer_steps_and_a_conflicting_flag(tmp_path, tiny_config, data_dir, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    train(tiny_config(steps=10), tmp_path / "run")
    code, _, err = run_cli(["train", "--run-dir", "run", "--resume", "--seed", "3"], capsys)
    assert code == 1 and "--seed sets train.seed = 3, but the run in run has train.seed = 0" in err


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_from_step_0(
    tmp_path, tiny_config, data_dir, monkeypatch, capsys
) -> None:
    config = tiny_config(steps=10, checkpoint_every=1000, sample_every=1000, log_every=1)
    run = tmp_path / "watch"
    with pytest.raises(TrainingAborted):  # Ctrl-C twice at once: no checkpoint at all, some metrics lines
        train(config, run, callback=lambda e: e["event"] == "step" and e["step"] == 2 and
              [os.kill(os.getpid(), signal.SIGINT) for _ in range(2)])  # fmt: skip
    assert list_checkpoints(run) == [] and (run / "config.json").is_file()
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["train", "--run-dir", "watch", "--resume"], capsys)
    assert code == 0, err
    assert err.splitlines()[0] == "watch has no checkpoint yet: training it again from step 0"
    assert [m["step"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())] == list(range(1, 11))


def test_the_divergence_advice_is_a_command_that_works(tmp_path, tiny_toml, data_dir, monkeypatch, capsys) -> None:
    from tinydiff import train as train_module

    real_loss = train_module.training_loss
    monkeypatch.setattr(train_module, "training_loss", lambda *a, **k: real_loss(*a, **k) * float("nan"))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["train", "--config", str(tiny_toml), "--steps", "10", "--batch-size", "16",
                            "--device", "cpu", "--run-dir", "run"], capsys)  # fmt: skip
    assert code == 1 and "no checkpoint was saved" in err
    advice = re.search(r"`tinydiff (train [^`]+)`", err).group(1).split()
    assert advice == ["train", "--run-dir", "run", "--resume", "--lr", "0.0001"]
    monkeypatch.setattr(train_module, "training_loss", real_loss)
    code, _, err = run_cli(advice, capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["train"]["lr"] == 0.0001


def test_a_stale_lock_of_a_killed_process_is_taken_over(tmp_path, tiny_config, data_dir) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("999999999\n")  # left by a process killed with -9: no one holds it
    assert train(tiny_config(steps=5, sample_every=1000), run).step == 5
    assert not (run / ".lock").exists()


def test_a_held_lock_refuses_a_second_writer(tmp_path, tiny_config, data_dir) -> None:
    from tinydiff.errors import TinyDiffError
    from tinydiff.tracking import run_lock

    with run_lock(tmp_path / "run"):
        with pytest.raises(TinyDiffError, match=rf"in use by another tinydiff train \(process {os.getpid()}\)"):
            train(tiny_config(steps=5), tmp_path / "run")
    assert not (tmp_path / "run").exists(), "the folder the lock made is gone again"


def test_snapshots_edited_by_people_never_cost_a_checkpoint(tmp_path, tiny_config, data_dir) -> None:
    from PIL import Image

    from tinydiff.images import decode_png

    run = tmp_path / "run"
    train(tiny_config(steps=10, sample_every=5), run)
    edited = run / "samples" / "step-000005.png"
    with Image.open(edited) as im:
        im.convert("RGB").save(edited)  # what an image editor does on save
    (run / "samples" / "step-000010.png").write_bytes(b"not a png at all")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(tiny_config(steps=15, sample_every=5), run, resume=True)
    assert not [w for w in caught if "could not" in str(w.message)]  # the RGB one is read, the broken one left out
    assert result.step == 15 and [s for s, _ in list_checkpoints(run)] == [10, 15]
    sheet = decode_png((run / "evolution.png").read_bytes())
    assert sheet.shape[1] > decode_png((run / "samples" / "step-000015.png").read_bytes()).shape[1]  # step 5 is in it


def test_an_unwritable_evolution_sheet_is_a_warning(tmp_path, tiny_config, data_dir) -> None:
    run = tmp_path / "run"
    (run / "evolution.png").mkdir(parents=True)  # a folder where the sheet goes: it cannot be written
    with pytest.warns(UserWarning, match="could not draw"):
        result = train(tiny_config(steps=10, sample_every=5), run)
    assert result.step == 10 and [s for s, _ in list_checkpoints(run)] == [10]


def test_snapshots_use_the_default_sampler_unless_configured(tmp_path, tiny_config, data_dir, monkeypatch) -> None:
    from tinydiff.pipeline import Pipeline

    used = []
    real = Pipeline.sample
    monkeypatch.setattr(Pipeline, "sample", lambda self, *a, **k: used.append(self.options(**{x: k.get(x) for x in ("sampler", "steps", "guidance")})) or real(self, *a, **k))
    train(tiny_config(steps=5, sample_every=5, sample_steps=None), tmp_path / "a")
    train(tiny_config(steps=5, sample_every=5, sample_sampler="ddim", sample_steps=3), tmp_path / "b")
    assert (used[0].sampler, used[0].steps) == ("dpm++", None)  # `tinydiff sample`'s default: DPM-Solver++, 10 steps
    assert (used[1].sampler, used[1].steps) == ("ddim", 3)


def test_ctrl_c_in_a_sweep_saves_the_variant_and_stops_the_sweep(tmp_path, data_dir) -> None:
    from conftest import write_tiny_sweep

    from tinydiff.errors import Interrupted
    from tinydiff.sweep import load_sweep, run_sweep

    text = write_tiny_sweep(tmp_path).read_text().replace("eval_every = 5\n", "")
    sweep = load_sweep(write_tiny_sweep(tmp_path, text))
    with pytest.raises(Interrupted, match="variant .* at step 4; checkpoint saved; run the same `tinydiff sweep`") as info:
        run_sweep(sweep, tmp_path / "out", callback=lambda e: e["event"] == "step" and e["step"] == 3 and os.kill(os.getpid(), signal.SIGINT))
    assert info.value.exit_code == 130
    first = tmp_path / "out" / sweep.variants[0].name
    assert [s for s, _ in list_checkpoints(first)] == [4]
    assert not (tmp_path / "out" / sweep.variants[1].name).exists(), "the sweep stopped"


def test_the_sweep_display_counts_a_variant_stopped_by_ctrl_c_as_unfinished() -> None:
    from tinydiff.cli.sweep import SweepProgress

    with SweepProgress() as progress:
        progress({"event": "sweep", "steps": {"a": 10, "b": 10}})
        progress({"event": "variant", "name": "a", "status": "new"})
        progress({"event": "step", "step": 3, "total": 10, "loss": None})
        progress({"event": "end", "variant": "a", "step": 3, "loss": None, "seconds": 1.0, "interrupted": 2})
        assert (progress.finished, progress.progress.tasks[0].completed) == (0, 3)
        progress({"event": "end", "variant": "a", "step": 10, "loss": None, "seconds": 1.0, "interrupted": None})
        assert (progress.finished, progress.progress.tasks[0].completed) == (1, 10)


def test_a_full_disk_at_a_checkpoint_is_one_line_and_leaves_no_half_written_checkpoint(
    tmp_path, tiny_toml, data_dir, monkeypatch, capsys
) -> None:
    import errno

    from tinydiff import files

    real_fsync = os.fsync
    calls = []

    def full_at_the_second_checkpoint(fd: int) -> None:
        calls.append(fd)
        if len(calls) > 4:  # the first checkpoint's files (and folder) went through
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", full_at_the_second_checkpoint)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["train", "--config", str(tiny_toml), "--steps", "10", "--batch-size", "16", "--device", "cpu",
                              "--checkpoint-every", "5", "--sample-every", "1000", "--run-dir", "run", "--quiet"], capsys)  # fmt: skip
    assert code == 1 and err == "error: No space left on device; check the path and its permissions\n"
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-000005"]  # no .tmp-* left
    assert not (tmp_path / "run" / ".lock").exists()


def test_sigterm_through_the_command_line_exits_143_with_the_resume_command(tmp_path, tiny_toml, data_dir, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("tinydiff.train.train", lambda *a, **k: train(*a, **{**k, "callback": _signal_at(2, signal.SIGTERM)}))
    code, out, err = run_cli(["train", "--config", str(tiny_toml), "--steps", "20", "--batch-size", "16", "--device", "cpu",
                              "--run-dir", "my run", "--quiet"], capsys)  # fmt: skip
    assert (code, out) == (143, "")
    assert err == "interrupted at step 3; checkpoint saved; resume with: tinydiff train --run-dir 'my run' --resume\n"
    assert [s for s, _ in list_checkpoints(tmp_path / "my run")] == [3]
