"""The forward process q(x_t | x_0), the training loss, and the epsilon predictor samplers call (Ho et al. 2020).

The network may predict epsilon (Ho et al. 2020), x_0, or v (Salimans & Ho 2022):
:data:`OBJECTIVES` says, for each, what the network is trained to output, how
its output turns into epsilon, and how Min-SNR-gamma weights it. Samplers see
every network through :class:`EpsilonPredictor`, which returns epsilon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from .schedules import NoiseSchedule

Tensor = torch.Tensor


def q_sample(x0: Tensor, t: Tensor, noise: Tensor, schedule: NoiseSchedule) -> Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al. 2020, eq. 4)."""
    a, s = schedule.alpha_sigma(t, x0.ndim)
    return a * x0 + s * noise


def predict_x0(eps: Tensor, x_t: Tensor, t: Tensor, schedule: NoiseSchedule) -> Tensor:
    """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) (Ho et al. 2020, eq. 4 solved for x_0)."""
    a, s = schedule.alpha_sigma(t, x_t.ndim)
    return (x_t - s * eps) / a


@dataclass(frozen=True)
class Objective:
    """What a network is trained to predict; ``a`` = sqrt(alpha_bar_t), ``s`` = sqrt(1 - alpha_bar_t)."""

    target: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]  # (x0, noise, a, s) -> the training target
    to_eps: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]  # (output, x_t, a, s) -> the epsilon it implies
    min_snr_weight: Callable[[Tensor, Tensor], Tensor]  # (snr, min(snr, gamma)) -> the loss weight (Hang et al. 2023)


OBJECTIVES: dict[str, Objective] = {
    "epsilon": Objective(
        target=lambda x0, noise, a, s: noise,
        to_eps=lambda out, x_t, a, s: out,
        min_snr_weight=lambda snr, clipped: clipped / snr,
    ),
    "x0": Objective(
        target=lambda x0, noise, a, s: x0,
        to_eps=lambda out, x_t, a, s: (x_t - a * out) / s,
        min_snr_weight=lambda snr, clipped: clipped,
    ),
    "v": Objective(  # v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022, sec. 4)
        target=lambda x0, noise, a, s: a * noise - s * x0,
        to_eps=lambda out, x_t, a, s: s * x_t + a * out,
        min_snr_weight=lambda snr, clipped: clipped / (snr + 1),
    ),
}


def training_loss(
    model: nn.Module,
    x0: Tensor,
    t: Tensor,
    noise: Tensor,
    schedule: NoiseSchedule,
    *,
    objective: str = "epsilon",
    context: Any = None,
    min_snr_gamma: float | None = None,
) -> Tensor:
    """L_simple: the MSE between the network's output and its target at x_t (Ho et al. 2020, eq. 14).

    ``min_snr_gamma`` weights each timestep by min(SNR, gamma) expressed in the objective's
    units (Min-SNR-gamma, Hang et al. 2023), so the many easy low-noise steps stop dominating.
    """
    objective_ = OBJECTIVES[objective]
    # 1. the noisy input x_t ~ q(x_t | x_0) (eq. 4)
    x_t = q_sample(x0, t, noise, schedule)
    # 2. the network's output and what it should have been
    output = model(x_t, t) if context is None else model(x_t, t, context)
    a, s = schedule.alpha_sigma(t, x0.ndim)
    target = objective_.target(x0, noise, a, s)
    # 3. the squared error per image, each weighted by its timestep's clipped SNR when asked
    per_image = ((output.float() - target) ** 2).flatten(1).mean(1)
    if min_snr_gamma is None:
        return per_image.mean()
    snr = schedule.snr(t)
    weight = objective_.min_snr_weight(snr, snr.clamp(max=min_snr_gamma))
    return (weight * per_image).mean()


class EpsilonPredictor:
    """Wraps a network into eps(x_t, t), whatever its objective: the one thing samplers call.

    With a prompt ``context`` and ``guidance`` w != 1, applies classifier-free guidance
    (Ho & Salimans 2022, eq. 6): eps = eps_uncond + w (eps_cond - eps_uncond), both
    predictions from one batched forward pass. w = 1 is the plain conditional prediction.

    ``guidance_interval`` (lo, hi) limits guidance to the steps whose noise level
    sigma = sqrt((1 - alpha_bar_t) / alpha_bar_t) lies in (lo, hi]; elsewhere the plain
    conditional prediction is used, at half the cost (Kynkaanniemi et al. 2024, "Applying
    guidance in a limited interval improves sample and distribution quality"). None: every step.
    """

    def __init__(
        self,
        model: nn.Module,
        schedule: NoiseSchedule,
        *,
        objective: str = "epsilon",
        context: Any = None,
        uncond_context: Any = None,
        guidance: float = 1.0,
        guidance_interval: tuple[float, float] | None = None,
    ) -> None:
        self.model = model
        self.schedule = schedule
        self.objective = OBJECTIVES[objective]
        self.context = context
        self.uncond_context = uncond_context
        self.guidance = guidance
        self.guidance_interval = guidance_interval
        self.evaluations = 0  # batched network evaluations, for speed reports

    def _eps(self, x_t: Tensor, t: Tensor, context: Any) -> Tensor:
        out = (self.model(x_t, t) if context is None else self.model(x_t, t, context)).float()
        a, s = self.schedule.alpha_sigma(t, x_t.ndim)
        return self.objective.to_eps(out, x_t, a, s)

    def guided(self, t: Tensor) -> Tensor:
        """Per image: is guidance applied at timestep ``t``? (True everywhere without an interval.)"""
        if self.guidance_interval is None:
            return torch.ones(t.shape, dtype=torch.bool, device=t.device)
        lo, hi = self.guidance_interval
        sigma = self.schedule.sigma(t)
        return (sigma > lo) & (sigma <= hi)

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        self.evaluations += 1
        if self.context is None or self.uncond_context is None or self.guidance == 1.0:
            return self._eps(x_t, t, self.context)
        guided = self.guided(t)
        if not guided.any():  # outside the guidance interval: the conditional prediction alone
            return self._eps(x_t, t, self.context)
        both = tuple(torch.cat([c, u]) for c, u in zip(self.context, self.uncond_context))
        eps_cond, eps_uncond = self._eps(torch.cat([x_t, x_t]), torch.cat([t, t]), both).chunk(2)
        eps = eps_uncond + self.guidance * (eps_cond - eps_uncond)
        if guided.all():
            return eps
        return torch.where(guided.view(-1, *([1] * (x_t.ndim - 1))), eps, eps_cond)


def number_canvas(num_digits: int, size: int = 28) -> tuple[int, list[int]]:
    """The width of a canvas for ``num_digits`` digits and the left edge of each digit's ``size``-wide window.

    Windows step by 11/14 of their size (22 pixels of 28): MNIST centres each digit in a
    20-pixel box, so neighbouring boxes sit 2 pixels apart, as handwritten digits do, and each
    window overlaps the next by 6 pixels of margin (measured: docs/text-to-image.md, Numbers).
    """
    stride = round(size * 11 / 14)
    return size + stride * (num_digits - 1), [j * stride for j in range(num_digits)]


class MultiDiffusion:
    """eps(x_t, t) on a wide canvas, fused from a denoiser's overlapping square windows (Bar-Tal et al. 2023).

    MultiDiffusion ("Fusing Diffusion Paths for Controlled Image Generation", eq. 3-5) takes, at
    every step, the canvas that best agrees with each window's own denoising step: with uniform
    weights, the per-pixel mean over the windows that cover it. Every sampler's step is affine
    in epsilon with the same coefficients at every pixel, so averaging the windows' epsilon is
    that same mean, and any sampler works unchanged. ``predict_eps`` sees the ``N * k`` windows
    of the N canvases in one batch, canvas by canvas (its context: one prompt per window).
    """

    def __init__(self, predict_eps: Callable[[Tensor, Tensor], Tensor], offsets: list[int], size: int) -> None:
        self.predict_eps = predict_eps
        self.offsets = list(offsets)
        self.size = size

    @property
    def evaluations(self) -> int:
        return getattr(self.predict_eps, "evaluations", 0)

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        n, k = x_t.shape[0], len(self.offsets)
        # 1. crop the k windows F_i(J_t) of each canvas and denoise them all in one batch, each with its prompt
        windows = torch.stack([x_t[..., o : o + self.size] for o in self.offsets], dim=1)  # [N, k, C, H, size]
        eps = self.predict_eps(windows.flatten(0, 1), t.repeat_interleave(k)).unflatten(0, (n, k))
        # 2. eq. 5 with W_i = 1: put each window back, sum, and divide by how many windows cover each pixel
        total = torch.zeros_like(x_t, dtype=eps.dtype)
        count = torch.zeros(x_t.shape[-1], dtype=eps.dtype, device=x_t.device)
        for j, o in enumerate(self.offsets):
            total[..., o : o + self.size] += eps[:, j]
            count[o : o + self.size] += 1
        return total / count
