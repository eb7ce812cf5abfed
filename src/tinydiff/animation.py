"""The denoising animation: each image's x_t beside the model's predicted x_0 at every sampler step, as frames and as a GIF.

A frame shows, for every image, the state x_t (left) and the clean image the model predicts from
it (right; Ho et al. 2020, eq. 15), upscaled, under the step and the noise level sigma =
sqrt((1 - alpha_bar_t) / alpha_bar_t). Frames are numpy arrays; Pillow, imported only here and only
when a GIF is made, encodes them.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np

from .errors import TinyDiffError
from .images import DISPLAY_SCALE, grid_shape, make_grid, render_text, upscale

if TYPE_CHECKING:
    from .outputs import Trajectory

# A GIF of every step of 1000-step DDPM would be 1000 frames, tens of megabytes of noise: longer
# trajectories show this many moments, evenly spaced, the first (pure noise) and last kept.
MAX_FRAMES = 60
SWEEP_MS = 3000  # the whole reverse process plays in about 3 s ...
MIN_FRAME_MS, MAX_FRAME_MS = 20, 250  # ... but no frame is shorter than browsers show (20 ms) or drags
PAUSE_MS = 2000  # the finished images stay on screen before the loop starts again
PAIR_GAP, CELL_GAP = 1, 3  # model pixels between x_t and its prediction, and between images
PAIR_GAP_VALUE, CELL_GAP_VALUE = 96, 40  # gray lines: a light one inside a pair, a dark one around it
MAX_FRAME_PIXELS = 1 << 22  # 4 megapixels a frame (64 images at the default scale), 240 MB for MAX_FRAMES


def frame_moments(count: int, *, max_frames: int = MAX_FRAMES) -> list[int]:
    """The moments of a trajectory that become frames: all ``count``, or ``max_frames`` evenly spaced, first and last kept."""
    if count <= max_frames:
        return list(range(count))
    return sorted({int(k) for k in np.linspace(0, count - 1, max_frames).round()})


def format_sigma(sigma: float) -> str:
    """Three significant digits without an exponent: 157, 2.35, 0.0101; 0 for clean images."""
    if sigma <= 0:
        return "0"
    return f"{sigma:.{max(0, 2 - math.floor(math.log10(sigma)))}f}"


def frame_label(moment: int, steps: int, sigma: float) -> str:
    return f"STEP {moment}/{steps}  SIGMA {format_sigma(sigma)}"


def text_scale(scale: int) -> int:
    """Pixels per font pixel of a frame's label: 3x5 glyphs 12x20 pixels tall at the default scale."""
    return max(2, scale)


def label_height(scale: int) -> int:
    """Rows of the label strip above each frame's images."""
    return 9 * text_scale(scale)


def frame_shape(n: int, h: int, w: int, *, nrow: int | None = None, scale: int = DISPLAY_SCALE) -> tuple[int, int]:
    """The ``(height, width)`` of a frame for ``n`` images of ``h x w`` pixels, before any widening for its label."""
    gh, gw = grid_shape(n, h, 2 * w + PAIR_GAP, nrow=nrow, padding=CELL_GAP, gap=CELL_GAP)
    return label_height(scale) + gh * scale, gw * scale


def check_frame_size(n: int, h: int, w: int, *, nrow: int | None = None, scale: int = DISPLAY_SCALE) -> None:
    """Refuse an animation whose frames would pass ``MAX_FRAME_PIXELS``: checked before any sampling."""
    height, width = frame_shape(n, h, w, nrow=nrow, scale=scale)
    if height * width > MAX_FRAME_PIXELS:
        raise TinyDiffError(
            f"an animation of {n} images at scale {scale} would have frames of {width} x {height} pixels, more than "
            f"{MAX_FRAME_PIXELS / 1e6:.1f} megapixels; lower the scale (--scale) or animate fewer images (--num)"
        )


def render_frames(trajectory: Trajectory, *, nrow: int | None = None, scale: int = DISPLAY_SCALE) -> np.ndarray:
    """One uint8 frame per moment (see :func:`frame_moments`): a label strip, then each image's pair.

    Below the label, the frame downscaled by ``scale`` is :func:`tinydiff.images.make_grid` of the
    pairs ``[x_t | gap | pred_x0]`` with ``CELL_GAP`` padding; the frame is widened where the label
    is wider than that.
    """
    x_t, pred_x0 = trajectory.x_t.numpy(), trajectory.pred_x0.numpy()
    moments, (_, n, h, w) = frame_moments(len(x_t)), x_t.shape
    ts, top = text_scale(scale), label_height(scale)
    labels = [render_text(frame_label(k, trajectory.steps, float(trajectory.sigma[k])), scale=ts) for k in moments]
    check_frame_size(n, h, w, nrow=nrow, scale=scale)
    height, grid_width = frame_shape(n, h, w, nrow=nrow, scale=scale)
    width = max(grid_width, max(label.shape[1] for label in labels) + 4 * ts)
    frames = np.full((len(moments), height, width), CELL_GAP_VALUE, dtype=np.uint8)
    frames[:, :top] = 0
    gap = np.full((n, h, PAIR_GAP), PAIR_GAP_VALUE, dtype=np.uint8)
    for f, (k, label) in enumerate(zip(moments, labels)):
        frames[f, 2 * ts : 2 * ts + label.shape[0], 2 * ts : 2 * ts + label.shape[1]] = label
        pairs = np.concatenate([x_t[k], gap, pred_x0[k]], axis=2)
        frames[f, top:, :grid_width] = upscale(make_grid(pairs, nrow=nrow, padding=CELL_GAP, pad_value=CELL_GAP_VALUE, gap=CELL_GAP), scale)
    return frames


def frame_durations(count: int) -> list[int]:
    """Milliseconds per frame: the sweep in about ``SWEEP_MS`` (whole centiseconds, as GIF stores them), then a pause."""
    each = min(MAX_FRAME_MS, max(MIN_FRAME_MS, round(SWEEP_MS / max(1, count - 1), -1)))
    return [int(each)] * (count - 1) + [PAUSE_MS]


def encode_gif(trajectory: Trajectory, *, nrow: int | None = None, scale: int = DISPLAY_SCALE) -> bytes:
    """The frames as a looping GIF (Pillow), every gray level kept: decoded, each frame equals its array."""
    from PIL import Image

    frames = render_frames(trajectory, nrow=nrow, scale=scale)
    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    # optimize=False: Pillow's palette optimization of later frames shifts some gray levels (by up to 12)
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=frame_durations(len(images)),
                   loop=0, optimize=False)  # fmt: skip
    return buffer.getvalue()
