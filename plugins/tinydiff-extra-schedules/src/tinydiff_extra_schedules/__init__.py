"""Extra noise schedules for TinyDiff, registered through the ``tinydiff`` entry-point group."""

from __future__ import annotations

import torch

from tinydiff import hookimpl
from tinydiff.schedules import betas_from_alphas_cumprod

__version__ = "0.1.0"


def quadratic(num_timesteps: int, *, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Quadratic betas: linear in sqrt(beta), squared (Ho et al. 2020, official code's "quad")."""
    scale = 1000.0 / num_timesteps
    return torch.linspace((beta_start * scale) ** 0.5, (beta_end * scale) ** 0.5, num_timesteps, dtype=torch.float64) ** 2


def sqrt(num_timesteps: int, *, s: float = 1e-4) -> torch.Tensor:
    """Square-root schedule, alpha_bar(t) = 1 - sqrt(t/T + s) (Li et al. 2022, Diffusion-LM, sec. 4.2)."""
    t = torch.linspace(0, num_timesteps, num_timesteps + 1, dtype=torch.float64) / num_timesteps
    alpha_bar = (1.0 - torch.sqrt(t + s)).clamp(min=1e-9)
    return betas_from_alphas_cumprod(alpha_bar)


@hookimpl
def tinydiff_register_schedules(register) -> None:
    """Add the schedules under their names; TinyDiff checks the names and records this plugin as their source."""
    register("quadratic", quadratic)
    register("sqrt", sqrt)
