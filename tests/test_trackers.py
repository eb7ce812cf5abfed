"""Trackers: metrics.jsonl, CSV and TensorBoard through one hook; a failing tracker is switched off and nothing is lost."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tinydiff import hookimpl, plugins
from tinydiff.images import decode_png
from tinydiff.plugins import get_host, registry
from tinydiff.trackers import TrackerWarning
from tinydiff.tracking import read_metrics
from tinydiff.train import train


@pytest.fixture(autouse=True)
def fresh_host():
    plugins.reset()
    yield
    plugins.reset()


def test_the_builtin_trackers_register_through_the_hook() -> None:
    assert registry("tracker").names() == ["csv", "jsonl", "tensorboard"]
    assert get_host().plugins["tinydiff.trackers"].registered == {"tracker": ["jsonl", "csv", "tensorboard"]}


def csv_rows(run) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


class Interrupt(Exception):
    pass


def test_csv_has_a_row_per_metrics_line_and_resumes_like_metrics_jsonl(tmp_path, tiny_config, data_dir) -> None:
    config = tiny_config(steps=10, checkpoint_every=5, eval_every=10, eval_num_per_digit=2, eval_steps=2, trackers=["csv"])
    run = tmp_path / "run"

    def die_before_the_last_checkpoint(event):
        if event["event"] == "log" and event["step"] == 10:
            raise Interrupt  # metrics.csv already holds step 10, logged after the step-5 checkpoint

    with pytest.raises(Interrupt):
        train(config, run, callback=die_before_the_last_checkpoint)
    assert [r["step"] for r in csv_rows(run)] == ["5", "10"]
    train(config, run, resume=True)
    rows, lines = csv_rows(run), read_metrics(run)
    assert [r["step"] for r in rows] == ["5", "10"], "the line after the checkpoint was dropped, then logged again"
    assert list(rows[0])[:7] == ["step", "loss", "grad_norm", "lr", "img_per_s", "epoch", "seconds"]
    assert {"eval_mnist_fd", "eval_fd_ratio", "eval_confidence"} <= set(rows[0]), "evaluation columns join when first logged"
    for row, line in zip(rows, lines):
        assert float(row["loss"]) == pytest.approx(line["loss"], rel=1e-12)
        assert (row["eval_mnist_fd"] != "") == ("eval_mnist_fd" in line)


def test_tensorboard_event_files_hold_the_scalars_images_and_config(tmp_path, tiny_config, data_dir) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(tiny_config(steps=10, sample_every=5, eval_every=5, eval_num_per_digit=2, eval_steps=2, trackers=["tensorboard"]), run)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "train/img_per_s", "train/grad_norm", "eval/mnist_fd", "eval/fd_ratio"} <= set(tags["scalars"])
    lines = read_metrics(run)
    losses = events.Scalars("train/loss")
    assert [s.step for s in losses] == [m["step"] for m in lines] == [5, 10]
    assert [s.value for s in losses] == pytest.approx([m["loss"] for m in lines], rel=1e-6)
    assert [s.step for s in events.Scalars("eval/mnist_fd")] == [5, 10]
    images = events.Images("samples")
    assert [i.step for i in images] == [5, 10]
    snapshot = decode_png((run / "samples" / "step-000010.png").read_bytes())
    assert (images[-1].height, images[-1].width) == snapshot.shape
    from io import BytesIO

    from PIL import Image

    drawn = np.asarray(Image.open(BytesIO(images[-1].encoded_image_string)).convert("L"))
    assert np.array_equal(drawn, snapshot), "the snapshot grid itself"
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]  # the config as hyper-parameters
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["train.steps"].number_value == 10 and start.hparams["schedule.name"].string_value == "linear"


class Boom:
    """A third party's tracker that breaks at its first metrics line."""

    logged: list[int] = []
    finished = False

    def start(self, run_dir, config, *, resumed_from):
        pass

    def log(self, metrics):
        Boom.logged.append(metrics["step"])
        if metrics["step"] == 5:
            raise ConnectionError("the tracking server went away")

    def log_image(self, step, name, image):
        pass

    def finish(self):
        Boom.finished = True


class BoomPlugin:
    @staticmethod
    @hookimpl
    def tinydiff_register_trackers(register):
        register("boom", Boom)


def test_a_failing_tracker_is_a_warning_and_training_loses_nothing(tmp_path, tiny_config, data_dir) -> None:
    straight = train(tiny_config(steps=10, trackers=["csv"]), tmp_path / "straight")
    get_host().add(BoomPlugin(), "boom-plugin")
    Boom.logged, Boom.finished = [], False
    with pytest.warns(TrackerWarning, match=r"tracker 'boom' failed at step 5: ConnectionError: the tracking server went away; "
                                            "it is switched off and training goes on"):
        result = train(tiny_config(steps=10, trackers=["boom", "csv"]), tmp_path / "run")
    assert Boom.logged == [5] and not Boom.finished, "switched off at its failure: never called again"
    assert result.step == 10
    assert [m["step"] for m in read_metrics(tmp_path / "run")] == [5, 10]
    assert [r["step"] for r in csv_rows(tmp_path / "run")] == ["5", "10"], "the other trackers miss nothing"
    for name in ("model.safetensors", "training_state.safetensors"):
        assert (straight.checkpoint / name).read_bytes() == (result.checkpoint / name).read_bytes(), name
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["train"]["trackers"] == ["boom", "csv"]


def test_a_tracker_is_refused_before_anything_is_written(tmp_path, tiny_config, data_dir, monkeypatch) -> None:
    import sys

    from tinydiff.errors import TinyDiffError

    with pytest.raises(TinyDiffError, match=r"unknown tracker 'tensorbord'; available: csv, jsonl, tensorboard \(did you mean 'tensorboard'\?\)"):
        train(tiny_config(steps=5, trackers=["tensorbord"]), tmp_path / "a")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(TinyDiffError, match=r'pip install "tinydiff\[tensorboard\]"'):
        train(tiny_config(steps=5, trackers=["tensorboard"]), tmp_path / "b")
    assert list(tmp_path.iterdir()) == []
