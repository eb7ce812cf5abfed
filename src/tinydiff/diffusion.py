"""The forward process q(x_t | x_0) and the training objective (Ho et al. 2020).

The network may predict epsilon (Ho et al. 2020), x_0, or v (Salimans & Ho
2022); :class:`Denoiser` converts whichever it predicts to epsilon, the one
calling convention every sampler uses.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn

from .schedules import NoiseSchedule


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al. 2020, eq. 4)."""
    a = schedule.gather(schedule.sqrt_alphas_cumprod, t, x0.ndim)
    s = schedule.gather(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim)
    return a * x0 + s * noise


def q_mean_variance(x0: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of q(x_t | x_0): sqrt(alpha_bar_t) x_0 and 1 - alpha_bar_t."""
    mean = schedule.gather(schedule.sqrt_alphas_cumprod, t, x0.ndim) * x0
    var = 1.0 - schedule.gather(schedule.alphas_cumprod, t, x0.ndim)
    return mean, var.expand_as(x0)


# -- objectives: what the network is trained to output ----------------------------
# target(x0, noise, a, s) with a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t)
_TARGETS: dict[str, Callable[..., torch.Tensor]] = {
    "epsilon": lambda x0, noise, a, s: noise,
    "x0": lambda x0, noise, a, s: x0,
    "v": lambda x0, noise, a, s: a * noise - s * x0,  # Salimans & Ho (2022), sec. 4
}
# eps(output, x_t, a, s): the epsilon implied by the network's output
_TO_EPS: dict[str, Callable[..., torch.Tensor]] = {
    "epsilon": lambda out, x_t, a, s: out,
    "x0": lambda out, x_t, a, s: (x_t - a * out) / s,
    "v": lambda out, x_t, a, s: s * x_t + a * out,
}


def training_loss(
    model: nn.Module,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    objective: str = "epsilon",
    context: Any = None,
    min_snr_gamma: float | None = None,
) -> torch.Tensor:
    """L_simple: the MSE between the network's output and its target at x_t (Ho et al. 2020, eq. 14).

    ``min_snr_gamma`` weights each timestep by min(SNR, gamma) expressed in the objective's
    units (Min-SNR-gamma, Hang et al. 2023), so the many easy low-noise steps stop dominating.
    """
    a = schedule.gather(schedule.sqrt_alphas_cumprod, t, x0.ndim)
    s = schedule.gather(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim)
    x_t = a * x0 + s * noise
    output = model(x_t, t) if context is None else model(x_t, t, context)
    target = _TARGETS[objective](x0, noise, a, s)
    per_image = ((output.float() - target) ** 2).flatten(1).mean(1)
    if min_snr_gamma is None:
        return per_image.mean()
    snr = (a / s).flatten() ** 2
    clipped = snr.clamp(max=min_snr_gamma)
    weight = {"epsilon": clipped / snr, "v": clipped / (snr + 1), "x0": clipped}[objective]
    return (weight * per_image).mean()


class Denoiser:
    """Wraps a network into eps(x_t, t), whatever its objective; samplers see only this.

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
        self.objective = objective
        self.context = context
        self.uncond_context = uncond_context
        self.guidance = guidance
        self.guidance_interval = guidance_interval
        self.evaluations = 0  # batched network evaluations, for speed reports

    def _eps(self, x_t: torch.Tensor, t: torch.Tensor, context: Any) -> torch.Tensor:
        out = (self.model(x_t, t) if context is None else self.model(x_t, t, context)).float()
        a = self.schedule.gather(self.schedule.sqrt_alphas_cumprod, t, x_t.ndim)
        s = self.schedule.gather(self.schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)
        return _TO_EPS[self.objective](out, x_t, a, s)

    def guided(self, t: torch.Tensor) -> torch.Tensor:
        """Per image: is guidance applied at timestep ``t``? (True everywhere without an interval.)"""
        if self.guidance_interval is None:
            return torch.ones(t.shape, dtype=torch.bool, device=t.device)
        lo, hi = self.guidance_interval
        alpha_bar = self.schedule.alphas_cumprod.to(t.device)[t]
        sigma = ((1.0 - alpha_bar) / alpha_bar).sqrt()
        return (sigma > lo) & (sigma <= hi)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
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


def predict_x0(eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) (Ho et al. 2020, eq. 4 solved for x_0)."""
    a = schedule.gather(schedule.sqrt_alphas_cumprod, t, x_t.ndim)
    s = schedule.gather(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)
    return (x_t - s * eps) / a
