"""What ``Pipeline`` hands a notebook: images with the seed that draws them again, and the reverse process step by step.

A :class:`Trajectory` keeps, at every sampler step, x_t and the model's prediction of the clean
image from it, x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) (Ho et al. 2020, eq. 15).
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from .data import to_uint8
from .errors import TinyDiffError
from .images import DISPLAY_SCALE, encode_png, make_grid, upscale
from .schedules import NoiseSchedule

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True, eq=False)
class Trajectory:
    """The reverse process of N images over S sampler steps as uint8 pictures: S + 1 moments, pure noise first.

    ``x_t[k]`` is the state after k steps (``x_t[0]`` is x_T, ``x_t[S]`` the finished images) and
    ``pred_x0[k]`` the model's prediction of the clean image from it; at the last moment that is
    the finished images themselves, as nothing is left to predict. ``sigma[k]`` is the noise level
    of ``x_t[k]``, sqrt((1 - alpha_bar_t) / alpha_bar_t), and 0 for the finished images.
    """

    x_t: torch.Tensor  # uint8 [S + 1, N, H, W]
    pred_x0: torch.Tensor  # uint8 [S + 1, N, H, W]
    sigma: torch.Tensor  # float64 [S + 1]

    @property
    def images(self) -> torch.Tensor:
        """The finished images, uint8 ``[N, H, W]``: what ``Pipeline.sample`` returns without ``trajectory=True``."""
        return self.x_t[-1]

    @property
    def steps(self) -> int:
        """S, the sampler steps."""
        return len(self.sigma) - 1

    def frames(self, *, nrow: int | None = None, scale: int = DISPLAY_SCALE) -> np.ndarray:
        """The animation's frames, uint8 ``[F, height, width]`` (see :mod:`tinydiff.animation`)."""
        from .animation import render_frames

        return render_frames(self, nrow=nrow, scale=scale)

    def gif(self, *, nrow: int | None = None, scale: int = DISPLAY_SCALE) -> bytes:
        """The animation as GIF bytes: noise becoming the images, with a pause on the last frame."""
        from .animation import encode_gif

        return encode_gif(self, nrow=nrow, scale=scale)

    def save_gif(self, path: str | Path, *, nrow: int | None = None, scale: int = DISPLAY_SCALE) -> None:
        """Write :meth:`gif` to ``path``, whole or not at all."""
        from .files import write_atomic

        write_atomic(path, self.gif(nrow=nrow, scale=scale))

    def _repr_html_(self) -> str:
        """Jupyter plays the animation inline."""
        return f'<img src="data:image/gif;base64,{base64.b64encode(self.gif()).decode("ascii")}">'

    def __repr__(self) -> str:
        steps, n, h, w = self.x_t.shape
        return f"Trajectory({n} images {h}x{w}, {steps - 1} steps, sigma {self.sigma[0].item():.3g} to 0)"


class TrajectoryRecorder:
    """A sampler callback that keeps x_t and the predicted x_0 of every step (uint8, on the CPU), then calls ``then``."""

    def __init__(self, x_T: torch.Tensor, schedule: NoiseSchedule, *, then: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.schedule = schedule
        self.then = then
        self.x_t = [to_uint8(x_T)]
        self.pred_x0: list[torch.Tensor] = []
        self.timesteps: list[int] = []

    def __call__(self, info: dict[str, Any]) -> None:
        self.timesteps.append(int(info["t"]))
        self.pred_x0.append(to_uint8(info["x0"]))
        self.x_t.append(to_uint8(info["x"]))
        if self.then is not None:
            self.then(info)

    def trajectory(self) -> Trajectory:
        if not self.timesteps:
            raise TinyDiffError(
                "the sampler reported no step, so there is no trajectory to show; a sampler must call "
                "callback({'i', 'total', 't', 'x', 'x0'}) after each step (docs/plugins.md)"
            )
        sigma = self.schedule.sigma(torch.tensor(self.timesteps)).to("cpu", torch.float64)
        return Trajectory(
            x_t=torch.stack(self.x_t),
            pred_x0=torch.stack([*self.pred_x0, self.x_t[-1]]),
            sigma=torch.cat([sigma, sigma.new_zeros(1)]),
        )


@dataclass(frozen=True, eq=False)
class PipelineOutput:
    """What ``pipe(prompt, num_images=...)`` returns: the images, the prompts and the seed that draws them again.

    Jupyter shows it as its grid (``_repr_png_``).
    """

    images: torch.Tensor  # uint8 [N, H, W], 0 = black background
    prompts: list[str] | None  # one per image, as sampled; None: unconditional
    seed: int  # pipe(..., seed=seed) draws the same images again (on the CPU)
    nrow: int | None = None  # images per grid row; None: ceil(sqrt(N))
    trajectory: Trajectory | None = None  # with pipe(..., trajectory=True)

    @property
    def pil_images(self) -> list[Image]:
        """One grayscale PIL image per sample, at the model's size (28 x 28)."""
        from PIL import Image

        return [Image.fromarray(a) for a in self.images.numpy()]

    def grid_array(self, *, scale: int = DISPLAY_SCALE) -> np.ndarray:
        """All images in one uint8 grid, one row per prompt when there are several, upscaled ``scale`` times."""
        return upscale(make_grid(self.images.numpy(), nrow=self.nrow), scale)

    def grid(self, *, scale: int = DISPLAY_SCALE) -> Image:
        """:meth:`grid_array` as a PIL image: a notebook shows it inline; ``.save("grid.png")`` writes it."""
        from PIL import Image

        return Image.fromarray(self.grid_array(scale=scale))

    def save_gif(self, path: str | Path, *, scale: int = DISPLAY_SCALE) -> None:
        """The denoising animation of these images (``pipe(..., trajectory=True)``), laid out like the grid."""
        if self.trajectory is None:
            raise TinyDiffError("these images were drawn without their trajectory; ask for it with pipe(..., trajectory=True)")
        self.trajectory.save_gif(path, nrow=self.nrow, scale=scale)

    def _repr_png_(self) -> bytes:
        return encode_png(self.grid_array())

    def __repr__(self) -> str:
        n, h, w = self.images.shape
        asked = "unconditional" if self.prompts is None else ", ".join(f"{p!r} x{c}" for p, c in Counter(self.prompts).items())
        steps = "" if self.trajectory is None else f", trajectory of {self.trajectory.steps} steps"
        return f"PipelineOutput({n} images {h}x{w}, {asked}, seed={self.seed}{steps})"
