"""Behaviour pinned across refactors: the bundled model draws the recorded images, short runs give the recorded losses.

tests/reference/ holds what tests/reference/record.py recorded before the code it guards was
restructured: every sampler's images from fixed seeds (images.npz, with their hashes) and the
loss and gradient norm of two short training runs (an unconditional one and a text model with
v-prediction, Min-SNR weighting and scale augmentation). On a machine like the recording one
(the same CPU vector units and torch) they must match bit for bit. Elsewhere floating-point
kernels sum in another order, so the images may differ by a grey level or two and the losses in
the sixth digit; a real change of behaviour (a swapped block, another random draw) moves them
by far more. A change that is meant to alter them re-records them with that script and says why.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent / "reference"
sys.path.insert(0, str(HERE))

import record  # noqa: E402

FIGURES = json.loads((HERE / "figures.json").read_text())
SAME_MACHINE = record.machine() == FIGURES["machine"]
CHECKED = ["ddpm-25-g1.5-interval", "ddim-20-g3.0-all", "dpm++-10-g1.5-interval"]


@pytest.fixture(autouse=True)
def recorded_threads():
    """On the recording's kind of machine, run with its thread count (sums split over threads add up in
    another order). Elsewhere the figures hold within a tolerance whatever the threads, so the test
    keeps its worker's one thread rather than compete with the other workers."""
    import torch

    before = torch.get_num_threads()
    if SAME_MACHINE:
        torch.set_num_threads(FIGURES["threads"])
    yield
    torch.set_num_threads(before)


def test_the_bundled_model_draws_the_recorded_images() -> None:
    with np.load(HERE / "images.npz") as saved:
        expected = dict(saved)
    # One guidance setting a sampler (both settings are recorded): every sampler, the interval and
    # the full-range guidance are each checked, in half the time of drawing all six.
    drawn = record.images(combinations=CHECKED)
    assert set(drawn) == set(CHECKED) and set(CHECKED) <= set(expected)
    for key, images in drawn.items():
        if SAME_MACHINE:
            assert hashlib.sha256(images.tobytes()).hexdigest() == FIGURES["images_sha256"][key], key
        diff = np.abs(images.astype(np.int16) - expected[key].astype(np.int16))
        assert diff.max() <= 8 and diff.mean() < 0.25, (key, int(diff.max()), float(diff.mean()))


def test_short_training_runs_give_the_recorded_losses(data_dir) -> None:
    runs = record.training_runs()
    assert set(runs) == set(FIGURES["training"])
    tolerance = 0 if SAME_MACHINE else 1e-4
    for name, logged in runs.items():
        expected = FIGURES["training"][name]
        assert [m["step"] for m in logged] == [m["step"] for m in expected], name
        for got, want in zip(logged, expected):
            for key in ("loss", "grad_norm"):
                assert got[key] == pytest.approx(want[key], rel=tolerance, abs=0), (name, got["step"], key)
