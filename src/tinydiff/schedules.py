"""Noise schedules: pure functions from the number of steps T to betas, and the tensor holder.

Each schedule returns ``betas`` as a float64 tensor of shape ``[T]``; everything
else (``alphas_cumprod`` and the posterior coefficients) is derived once in
:class:`NoiseSchedule`. Schedules are looked up by name in the plugin registry.
"""

from __future__ import annotations

import math

import torch

from .errors import TinyDiffError
from .hookspecs import hookimpl

MAX_BETA = 0.999  # clip as in Nichol & Dhariwal (2021), so the last steps stay invertible


def linear(num_steps: int, *, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linear betas (Ho et al. 2020, sec. 4); the ends scale with 1000/T so any T matches T=1000."""
    scale = 1000.0 / num_steps
    return torch.linspace(beta_start * scale, beta_end * scale, num_steps, dtype=torch.float64)


def betas_from_alphas_cumprod(alpha_bar: torch.Tensor) -> torch.Tensor:
    """beta_t = 1 - alpha_bar(t) / alpha_bar(t-1) for alpha_bar sampled at t = 0..T (T+1 values)."""
    return (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=MAX_BETA)


def cosine(num_steps: int, *, s: float = 0.008) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17): alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) pi/2)."""
    t = torch.linspace(0, num_steps, num_steps + 1, dtype=torch.float64) / num_steps
    alpha_bar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return betas_from_alphas_cumprod(alpha_bar)


def sigmoid(num_steps: int, *, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> torch.Tensor:
    """Sigmoid schedule (Jabri et al. 2022, alg. 1): alpha_bar from a scaled, shifted sigmoid."""
    t = torch.linspace(0, num_steps, num_steps + 1, dtype=torch.float64) / num_steps
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


def validate_betas(betas: object, num_steps: int, name: str = "schedule") -> torch.Tensor:
    """Check a schedule's output: a finite 1-D tensor of T values with 0 < beta < 1."""
    if not isinstance(betas, torch.Tensor):
        raise TinyDiffError(f"schedule {name!r} returned {type(betas).__name__}, expected a tensor of betas")
    if betas.shape != (num_steps,):
        raise TinyDiffError(f"schedule {name!r} returned shape {tuple(betas.shape)}, expected ({num_steps},)")
    betas = betas.to(torch.float64)
    if not torch.isfinite(betas).all():
        raise TinyDiffError(f"schedule {name!r} returned non-finite betas")
    if not ((betas > 0) & (betas < 1)).all():
        raise TinyDiffError(
            f"schedule {name!r} returned betas outside (0, 1): min {betas.min().item():.3g}, "
            f"max {betas.max().item():.3g}; check its options and the number of steps"
        )
    return betas


class NoiseSchedule:
    """The tensors of a discrete schedule (Ho et al. 2020): betas, alphas_cumprod and the posterior q(x_{t-1} | x_t, x_0)."""

    def __init__(self, betas: torch.Tensor) -> None:
        betas = betas.to(torch.float64)
        self.num_steps = betas.shape[0]
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()

    @classmethod
    def from_name(cls, name: str, num_steps: int, **options: float) -> "NoiseSchedule":
        """Build a registered schedule by name, validating what it returns."""
        from .plugins import get_schedule

        if num_steps < 1:
            raise TinyDiffError(f"the number of diffusion steps must be positive, got {num_steps}")
        fn = get_schedule(name)
        try:
            betas = fn(num_steps, **options)
        except TypeError as exc:
            raise TinyDiffError(f"schedule {name!r} does not accept options {sorted(options)}: {exc}") from None
        return cls(validate_betas(betas, num_steps, name))

    def gather(self, values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
        """values[t] as float32 on t's device, shaped [B, 1, ..., 1] to broadcast over an image batch."""
        out = values.to(t.device)[t].float()
        return out.reshape(-1, *([1] * (ndim - 1)))

    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) per step (Kingma et al. 2021)."""
        return self.alphas_cumprod / (1.0 - self.alphas_cumprod)
