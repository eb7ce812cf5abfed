"""Samplers: pure functions with one shared signature, no UI.

``sampler(denoiser, x_T, schedule, *, steps, generator, callback) -> x_0``

- ``denoiser(x_t, t) -> eps`` (see :class:`tinydiff.diffusion.Denoiser`);
- ``steps``: how many network evaluations (``None``: the sampler's default);
- ``generator``: the only source of randomness (never the global RNG);
- ``callback({"i", "total", "t", "x", "x0"})`` after each step, for progress bars.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .diffusion import predict_x0
from .errors import TinyDiffError
from .hookspecs import hookimpl
from .schedules import NoiseSchedule

Callback = Callable[[dict[str, Any]], None]


def respaced_timesteps(num_steps: int, steps: int | None) -> torch.Tensor:
    """An evenly spaced, increasing subset of 0..T-1 of length ``steps`` (Nichol & Dhariwal 2021, sec. 4)."""
    if steps is None or steps == num_steps:
        return torch.arange(num_steps)
    if not 1 <= steps <= num_steps:
        raise TinyDiffError(f"--steps must be between 1 and the model's {num_steps} diffusion steps, got {steps}")
    return torch.linspace(0, num_steps - 1, steps, dtype=torch.float64).round().long()


@torch.no_grad()
def ddpm(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020, alg. 2) over all T steps, or a respaced subset (Nichol & Dhariwal 2021)."""
    timesteps = respaced_timesteps(schedule.num_steps, steps)
    alpha_bar = schedule.alphas_cumprod
    total = len(timesteps)
    for i in reversed(range(total)):
        t = int(timesteps[i])
        # 1. alpha_bar at this step and the previous kept step; the step's effective beta
        ab_t = alpha_bar[t].item()
        ab_prev = alpha_bar[int(timesteps[i - 1])].item() if i > 0 else 1.0
        beta_t = 1.0 - ab_t / ab_prev
        # 2. predict epsilon, then x_0 (eq. 15), clipped to the data range [-1, 1]
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = denoiser(x, t_batch)
        x0 = predict_x0(eps, x, t_batch, schedule).clamp(-1.0, 1.0)
        # 3. posterior mean of q(x_{t-1} | x_t, x_0) (eq. 7)
        coef_x0 = ab_prev**0.5 * beta_t / (1.0 - ab_t)
        coef_xt = (1.0 - beta_t) ** 0.5 * (1.0 - ab_prev) / (1.0 - ab_t)
        mean = coef_x0 * x0 + coef_xt * x
        # 4. add noise with the posterior variance beta_tilde (sigma_t^2 = beta_tilde_t), none at the last step
        if i > 0:
            var = beta_t * (1.0 - ab_prev) / (1.0 - ab_t)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = mean + var**0.5 * noise
        else:
            x = mean
        if callback is not None:
            callback({"i": total - i, "total": total, "t": t, "x": x, "x0": x0})
    return x


@hookimpl
def tinydiff_register_samplers(register) -> None:
    """The built-in samplers."""
    register("ddpm", ddpm)
