"""tinydiff.animation: frames of x_t beside the predicted x_0, their labels and timing, and the GIF that holds them exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import read_gif

from tinydiff.animation import (
    CELL_GAP,
    MAX_FRAMES,
    PAIR_GAP,
    PAUSE_MS,
    encode_gif,
    format_sigma,
    frame_durations,
    frame_label,
    frame_moments,
    label_height,
    render_frames,
)
from tinydiff.errors import TinyDiffError
from tinydiff.images import make_grid, render_text
from tinydiff.outputs import Trajectory


def random_trajectory(steps: int, n: int, *, size: int = 6, seed: int = 0) -> Trajectory:
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randint(0, 256, (steps + 1, n, size, size), generator=g, dtype=torch.uint8)
    pred_x0 = torch.randint(0, 256, (steps + 1, n, size, size), generator=g, dtype=torch.uint8)
    pred_x0[-1] = x_t[-1]
    sigma = torch.cat([torch.logspace(2, -2, steps, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    return Trajectory(x_t=x_t, pred_x0=pred_x0, sigma=sigma)


@pytest.mark.parametrize("n, nrow, scale", [(1, None, 1), (5, None, 2), (4, 2, 3), (6, 3, 4)])
def test_each_frame_holds_x_t_beside_the_prediction_of_every_image_upscaled(n, nrow, scale) -> None:
    traj = random_trajectory(3, n)
    frames = render_frames(traj, nrow=nrow, scale=scale)
    assert frames.dtype == np.uint8 and len(frames) == 4
    top, size, cols = label_height(scale), 6, nrow or int(np.ceil(np.sqrt(n)))
    for k in range(4):
        below = frames[k, top:]
        for i in range(n):
            r, c = divmod(i, cols)
            y = (CELL_GAP + r * (size + CELL_GAP)) * scale
            x = (CELL_GAP + c * (2 * size + PAIR_GAP + CELL_GAP)) * scale
            cell = below[y : y + size * scale, x : x + (2 * size + PAIR_GAP) * scale]
            assert (cell == np.kron(cell[::scale, ::scale], np.ones((scale, scale), np.uint8))).all(), "pixels stay square"
            np.testing.assert_array_equal(cell[::scale, : size * scale : scale], traj.x_t[k, i].numpy())
            np.testing.assert_array_equal(cell[::scale, (size + PAIR_GAP) * scale :: scale], traj.pred_x0[k, i].numpy())
        pairs = np.concatenate([traj.x_t[k].numpy(), np.zeros((n, size, PAIR_GAP), np.uint8), traj.pred_x0[k].numpy()], axis=2)
        grid = make_grid(pairs, nrow=nrow, padding=CELL_GAP)
        assert below[::scale, ::scale].shape[0] == grid.shape[0] and below.shape[1] >= grid.shape[1] * scale


def test_the_label_names_the_step_and_the_noise_level() -> None:
    traj = random_trajectory(4, 2)
    frames = render_frames(traj, scale=2)
    for k, frame in enumerate(frames):
        text = render_text(frame_label(k, 4, float(traj.sigma[k])), scale=2)
        strip = frame[: label_height(2)]
        ys, xs = np.nonzero(strip)
        np.testing.assert_array_equal(strip[ys.min() : ys.max() + 1, xs.min() : xs.min() + text.shape[1]], text)
    assert frame_label(0, 10, 157.4) == "STEP 0/10  SIGMA 157"
    assert frame_label(10, 10, 0.0) == "STEP 10/10  SIGMA 0"


def test_a_narrow_frame_is_widened_to_hold_its_label() -> None:
    frames = render_frames(random_trajectory(12, 1), scale=1)
    label = render_text(frame_label(12, 12, 0.0101), scale=2)
    assert frames.shape[2] >= label.shape[1]


@pytest.mark.parametrize("sigma, text", [(157.41, "157"), (54.57, "54.6"), (2.5547, "2.55"), (0.38, "0.380"),
                                         (0.010001, "0.0100"), (12345.6, "12346"), (0.0, "0")])  # fmt: skip
def test_sigma_is_written_with_three_significant_digits_and_no_exponent(sigma, text) -> None:
    assert format_sigma(sigma) == text


def test_every_moment_is_a_frame_up_to_the_limit_then_evenly_spaced_ends_kept() -> None:
    assert frame_moments(11) == list(range(11))
    assert frame_moments(MAX_FRAMES) == list(range(MAX_FRAMES))
    picked = frame_moments(1001)
    assert len(picked) == MAX_FRAMES and picked[0] == 0 and picked[-1] == 1000
    gaps = np.diff(picked)
    assert gaps.min() >= 16 and gaps.max() <= 18  # about 1000 / 59 apart
    frames = render_frames(random_trajectory(100, 1, size=2), scale=1)
    assert len(frames) == MAX_FRAMES


def test_the_reverse_process_plays_in_about_three_seconds_then_pauses() -> None:
    assert frame_durations(11) == [250] * 10 + [PAUSE_MS]  # dpm++'s 10 steps: 250 ms each, the slowest
    assert frame_durations(51) == [60] * 50 + [PAUSE_MS]  # ddim's 50
    assert frame_durations(60) == [50] * 59 + [PAUSE_MS]
    assert frame_durations(1001)[:-1] == [20] * 1000  # never faster than browsers show
    assert all(d % 10 == 0 for d in frame_durations(37)), "GIF stores whole centiseconds"


def test_the_gif_holds_every_frame_exactly_with_its_duration() -> None:
    traj = random_trajectory(5, 3, size=8, seed=1)  # random gray levels: all 256 of them, in every frame
    frames = render_frames(traj, scale=2)
    data = encode_gif(traj, scale=2)
    assert data[:6] == b"GIF89a"
    decoded, durations = read_gif(data)
    np.testing.assert_array_equal(decoded, frames)
    assert durations == frame_durations(len(frames))


def test_an_animation_too_large_for_memory_is_refused() -> None:
    with pytest.raises(TinyDiffError, match="megapixels; lower the scale"):
        render_frames(random_trajectory(1, 256, size=28), scale=8)
