"""Whole numbers with the bundled model: a canvas the classifier reads, mixed prompts, and every output of `tinydiff sample`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_npz
from typer.testing import CliRunner

from tinydiff.images import DISPLAY_SCALE, decode_png, grid_shape

runner = CliRunner()


@pytest.fixture(scope="module")
def pipe():
    from tinydiff.pipeline import Pipeline

    return Pipeline.from_ref(device="cpu")


def test_a_two_digit_canvas_reads_right_at_both_positions(pipe) -> None:
    from tinydiff.evaluate import cut_out_digits, predict

    images = pipe.sample(1, prompts="the number 42", seed=0)  # the defaults: dpm++, guidance in its interval
    assert images.shape == (1, 28, 50)
    assert predict(cut_out_digits(images, 2)[0]).tolist() == [4, 2]


def test_mixed_prompts_keep_their_order_and_single_digits_are_drawn_as_before(pipe) -> None:
    prompts = ["a handwritten seven", "the year 2026", "forty-two"]
    mixed = pipe.sample(3, prompts=prompts, seed=3, steps=1)
    assert mixed.shape == (3, 28, 94) and pipe.canvas_widths(pipe.check_prompts(prompts)) == [28, 94, 50]
    assert torch.equal(mixed, pipe.sample(3, prompts=prompts, seed=3, steps=1))  # same seed, same images
    # the digits are drawn first, from the seed's first noise: the seven is the seven sampled alone, centred on background
    alone = pipe.sample(1, prompts=["a handwritten seven"], seed=3, steps=1)
    assert torch.equal(mixed[0, :, 33:61], alone[0])
    assert mixed[0, :, :33].eq(0).all() and mixed[0, :, 61:].eq(0).all() and mixed[2, :, :22].eq(0).all()
    path = pipe.sample(2, prompts=["7", "42"], seed=3, steps=1, trajectory=True)
    assert path.x_t.shape == (2, 2, 28, 50) and path.pred_x0.shape == (2, 2, 28, 50)  # x_T and 1 step
    assert pipe("the year 2026", num_images=2, seed=1, steps=1).images.shape == (2, 28, 94)


def sample(tmp_path: Path, out: str, *args: str):
    from tinydiff.cli import app

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a handwritten seven\nthe year 2026\n", encoding="utf-8")
    return runner.invoke(app, ["sample", "--prompts-file", str(prompts), "--num", "2", "--steps", "1", "--seed", "0",
                               "--out", f"{tmp_path}/{out}", *args],
                         env={"FORCE_COLOR": "1", "NO_COLOR": None, "TERM": "xterm-256color"})  # as on a colour terminal  # fmt: skip


def test_sample_writes_wide_images_in_every_format(tmp_path: Path) -> None:
    result = sample(tmp_path, "n.npz", "--no-preview")
    assert result.exit_code == 0, result.output
    arrays = read_npz(tmp_path / "n.npz")
    assert arrays["images"].shape == (4, 28, 94) and arrays["images"].dtype == np.uint8
    assert arrays["widths"].tolist() == [28, 28, 94, 94]
    assert arrays["prompts"].tolist() == ["a handwritten seven"] * 2 + ["the year 2026"] * 2
    result = sample(tmp_path, "each/", "--no-preview")
    assert result.exit_code == 0, result.output
    shapes = [decode_png((tmp_path / "each" / f"{i:04d}.png").read_bytes()).shape for i in range(4)]
    assert shapes == [(28, 28), (28, 28), (28, 94), (28, 94)]  # each PNG cut to its own canvas
    result = sample(tmp_path, "grid.png")  # with the terminal preview
    assert result.exit_code == 0, result.output
    h, w = grid_shape(4, 28, 94, nrow=2)
    assert decode_png((tmp_path / "grid.png").read_bytes()).shape == (h * DISPLAY_SCALE, w * DISPLAY_SCALE)
    assert result.stdout.count("\u2580") > 100  # the preview's half blocks


def test_eval_numbers_reports_accuracy_by_length_and_position(data_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    from tinydiff import evaluate
    from tinydiff.cli import app
    from tinydiff.data import load_mnist

    def first_test_images(data_dir, reference):  # MNIST-FD against 1,000 test images, not 10,000: the schema is what is tested
        return evaluate.gaussian_stats(evaluate.features(load_mnist(data_dir, split=reference)[0][:1000]))

    monkeypatch.setattr(evaluate, "_reference_stats", first_test_images)

    result = runner.invoke(app, ["eval", "--numbers", "--lengths", "2,3", "--num-per-digit", "2", "--steps", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["lengths"]) == {"2", "3"} and report["digits"] == 20 + 18
    three = report["lengths"]["3"]
    assert three["numbers"] == 6 and three["canvas_width"] == 72 and len(three["accuracy_by_position"]) == 3
    for key in ("digit_accuracy", "numbers_right"):
        assert 0 <= three[key] <= 1
    assert three["numbers_right"] <= three["digit_accuracy"]
    assert report["mnist_fd_cut_out"] > 0 and report["mnist_fd_single"] > 0 and three["time_vs_single_digit"] > 0
