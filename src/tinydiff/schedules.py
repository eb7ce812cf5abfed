"""Noise schedules: pure functions from the number of diffusion timesteps T to betas, and the tensor holder.

Each schedule returns ``betas`` as a float64 tensor of shape ``[T]``; everything
else (``alphas_cumprod`` and its square roots) is derived once in
:class:`NoiseSchedule`, which the loss and the samplers read through its methods.
Schedules are looked up by name in the plugin registry.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .errors import TinyDiffError
from .hookspecs import hookimpl

MAX_BETA = 0.999  # clip as in Nichol & Dhariwal (2021), so the last steps stay invertible


def linear(num_timesteps: int, *, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linear betas (Ho et al. 2020, sec. 4); the ends scale with 1000/T so any T matches T=1000."""
    scale = 1000.0 / num_timesteps
    return torch.linspace(beta_start * scale, beta_end * scale, num_timesteps, dtype=torch.float64)


def betas_from_alphas_cumprod(alpha_bar: torch.Tensor) -> torch.Tensor:
    """beta_t = 1 - alpha_bar(t) / alpha_bar(t-1) for alpha_bar sampled at t = 0..T (T+1 values)."""
    return (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=MAX_BETA)


def cosine(num_timesteps: int, *, s: float = 0.008) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17): alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) pi/2)."""
    t = torch.linspace(0, num_timesteps, num_timesteps + 1, dtype=torch.float64) / num_timesteps
    alpha_bar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return betas_from_alphas_cumprod(alpha_bar)


def sigmoid(num_timesteps: int, *, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> torch.Tensor:
    """Sigmoid schedule (Jabri et al. 2022, alg. 1): alpha_bar from a scaled, shifted sigmoid."""
    t = torch.linspace(0, num_timesteps, num_timesteps + 1, dtype=torch.float64) / num_timesteps
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))
    alpha_bar = (v_end - torch.sigmoid((t * (end - start) + start) / tau)) / (v_end - v_start)
    return betas_from_alphas_cumprod(alpha_bar.clamp(min=1e-9))


@hookimpl
def tinydiff_register_schedules(register) -> None:
    """The built-in schedules."""
    register("linear", linear)
    register("cosine", cosine)
    register("sigmoid", sigmoid)


def validate_betas(betas: object, num_timesteps: int, name: str = "schedule") -> torch.Tensor:
    """Check a schedule's output: a finite 1-D tensor of T values with 0 < beta < 1."""
    if not isinstance(betas, torch.Tensor):
        raise TinyDiffError(f"schedule {name!r} returned {type(betas).__name__}, expected a tensor of betas")
    if betas.shape != (num_timesteps,):
        raise TinyDiffError(f"schedule {name!r} returned shape {tuple(betas.shape)}, expected ({num_timesteps},)")
    betas = betas.to(torch.float64)
    if not torch.isfinite(betas).all():
        raise TinyDiffError(f"schedule {name!r} returned non-finite betas")
    if not ((betas > 0) & (betas < 1)).all():
        raise TinyDiffError(
            f"schedule {name!r} returned betas outside (0, 1): min {betas.min().item():.3g}, "
            f"max {betas.max().item():.3g}; check its options and the number of timesteps"
        )
    return betas


class NoiseSchedule:
    """A discrete schedule's tensors (Ho et al. 2020): betas, alphas_cumprod (alpha_bar_t) and their square roots.

    Read per timestep through :meth:`alpha_sigma` (the coefficients of q(x_t | x_0)),
    :meth:`snr` and :meth:`sigma`; the tables stay in float64 on the CPU.
    """

    def __init__(self, betas: torch.Tensor) -> None:
        betas = betas.to(torch.float64)
        self.num_timesteps = betas.shape[0]  # T
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()

    @classmethod
    def from_name(cls, name: str, num_timesteps: int, **options: float) -> "NoiseSchedule":
        """Build a registered schedule by name, validating what it returns."""
        from .plugins import get_schedule

        if num_timesteps < 1:
            raise TinyDiffError(f"the number of diffusion timesteps must be positive, got {num_timesteps}")
        fn = get_schedule(name)
        try:
            betas = fn(num_timesteps, **options)
        except TypeError as exc:
            raise TinyDiffError(f"schedule {name!r} does not accept options {sorted(options)}: {exc}") from None
        return cls(validate_betas(betas, num_timesteps, name))

    @classmethod
    def from_config(cls, config: Any) -> "NoiseSchedule":
        """The schedule a :class:`~tinydiff.config.ScheduleConfig` names."""
        return cls.from_name(config.name, config.num_timesteps, **config.options)

    def alpha_sigma(self, t: torch.Tensor, ndim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t), the coefficients of x_0 and epsilon in x_t (Ho et al. 2020,
        eq. 4), as float32 on t's device, shaped [B, 1, ..., 1] to broadcast over a batch of ``ndim`` dimensions."""
        shape = (-1, *([1] * (ndim - 1)))
        a = self.sqrt_alphas_cumprod.to(t.device)[t].float().reshape(shape)
        s = self.sqrt_one_minus_alphas_cumprod.to(t.device)[t].float().reshape(shape)
        return a, s

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) (Kingma et al. 2021), float32 [B]."""
        a, s = self.alpha_sigma(t)
        return (a / s) ** 2

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The noise level sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) of the variance-exploding view (Karras
        et al. 2022), float64 [B]: what guidance intervals are measured in."""
        alpha_bar = self.alphas_cumprod.to(t.device)[t]
        return ((1.0 - alpha_bar) / alpha_bar).sqrt()
