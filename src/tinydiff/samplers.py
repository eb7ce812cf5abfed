"""Samplers: pure functions with one shared signature, no UI.

``sampler(predict_eps, x_T, schedule, *, steps, generator, callback) -> x_0``

- ``predict_eps(x_t, t) -> eps`` (see :class:`tinydiff.diffusion.EpsilonPredictor`);
- ``steps``: sampler steps, one network evaluation each (``None``: the sampler's default);
- ``generator``: the only source of randomness (never the global RNG);
- ``callback({"i", "total", "t", "x", "x0"})`` after each step, for progress bars.

Built in: ``ddpm`` (ancestral, all T steps by default), ``ddim`` (50 steps, ``eta`` option)
and ``dpm++`` (DPM-Solver++(2M), 10 steps; the default sampler). Each makes one network evaluation per step,
starts from x_T at the largest kept timestep T-1, and returns x_0 clipped to [-1, 1].

Fewer steps than T visit a subset of the timesteps, the *grid*; the built-ins take it as the
``spacing`` option (:func:`timestep_grid`): ``uniform`` (evenly spaced in t), ``trailing``
(evenly spaced from T-1, as diffusers' ``timestep_spacing="trailing"``), ``logsnr`` (evenly
spaced in log-SNR, Lu et al. 2022) or ``karras`` (Karras et al. 2022's rho = 7 noise levels).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from .diffusion import predict_x0
from .errors import TinyDiffError
from .hookspecs import hookimpl
from .schedules import NoiseSchedule

Callback = Callable[[dict[str, Any]], None]

DDIM_STEPS = 50  # the usual default: DDIM comes close to full-T quality by 50 steps (Song et al. 2021)
# Lu et al. (2022): good guided samples in 10 to 20 steps. Measured on the bundled model
# (benchmarks/quality_vs_steps.py): 10 steps as good as 20 and as 1000-step DDPM, in half the time.
DPM_SOLVER_STEPS = 10


def default_steps(schedule: NoiseSchedule, steps: int | None, default: int) -> int:
    """``steps``, or the sampler's ``default`` capped at the schedule's T."""
    return steps if steps is not None else min(default, schedule.num_timesteps)


def log_snr(alpha_bar: float) -> float:
    """lambda = log(alpha / sigma) = log(alpha_bar / (1 - alpha_bar)) / 2 (Lu et al. 2022, sec. 2); inf for clean data."""
    return math.inf if alpha_bar >= 1.0 else 0.5 * math.log(alpha_bar / (1.0 - alpha_bar))


SPACINGS = ("uniform", "trailing", "logsnr", "karras")
DEFAULT_SPACING = "uniform"
KARRAS_RHO = 7.0  # Karras et al. (2022), eq. 5: rho = 7 spends more steps at low noise
# The log-SNR and Karras grids start from here at most: the linear schedule's lambda at T-1 (T = 1000,
# sigma = 158). Schedules that go further (cosine's clipped betas reach lambda = -10 at T-1) would
# otherwise spend several steps where x_t is noise to within a thousandth; T-1 stays the first step.
LAMBDA_MIN = -5.1


def respaced_timesteps(num_timesteps: int, steps: int | None) -> torch.Tensor:
    """An evenly spaced, increasing subset of 0..T-1 of length ``steps`` (Nichol & Dhariwal 2021, sec. 4)."""
    if steps is None or steps == num_timesteps:
        return torch.arange(num_timesteps)
    if not 1 <= steps <= num_timesteps:
        raise TinyDiffError(f"--steps must be between 1 and the model's {num_timesteps} diffusion timesteps, got {steps}")
    if steps == 1:  # one step starts from pure noise, at the last timestep
        return torch.tensor([num_timesteps - 1])
    return torch.linspace(0, num_timesteps - 1, steps, dtype=torch.float64).round().long()


def check_spacing(spacing: str) -> None:
    """A one-line error for a grid name that is not one of :data:`SPACINGS`."""
    if spacing not in SPACINGS:
        raise TinyDiffError(f"unknown timestep spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")


def _strictly_increasing(ts: list[int], num_timesteps: int) -> torch.Tensor:
    """Nearest-timestep grids can repeat a timestep where the schedule moves fast: push repeats apart, within 0..T-1."""
    for i in range(1, len(ts)):
        ts[i] = max(ts[i], ts[i - 1] + 1)
    ts[-1] = min(ts[-1], num_timesteps - 1)
    for i in range(len(ts) - 2, -1, -1):
        ts[i] = min(ts[i], ts[i + 1] - 1)
    return torch.tensor(ts, dtype=torch.long)


def timestep_grid(schedule: NoiseSchedule, steps: int | None, spacing: str | None = None) -> torch.Tensor:
    """The increasing timesteps a sampler of ``steps`` steps visits, ending at T-1 (all T for ``None`` or T).

    - ``uniform``: evenly spaced in t, from 0 to T-1 (Nichol & Dhariwal 2021, sec. 4);
    - ``trailing``: T-1, T-1-T/steps, ...: evenly spaced from the top, the last step from t = T/steps - 1
      straight to clean data (diffusers' ``timestep_spacing="trailing"``; Lin et al. 2024, table 2);
    - ``logsnr``: evenly spaced in lambda = log(alpha / sigma) between t = T-1 and t = 0 (Lu et al.
      2022, the DPM-Solver authors' ``skip_type="logSNR"``): more steps at low noise;
    - ``karras``: sigma = sqrt((1 - alpha_bar) / alpha_bar) spaced as Karras et al. (2022), eq. 5, with rho = 7.

    The log-SNR and Karras grids take the timestep nearest each target level, as the network knows
    only whole timesteps.
    """
    spacing = spacing or DEFAULT_SPACING
    check_spacing(spacing)
    num_timesteps = schedule.num_timesteps
    if spacing == "uniform" or steps is None or steps == num_timesteps:
        return respaced_timesteps(num_timesteps, steps)
    respaced_timesteps(num_timesteps, steps)  # the same check of steps
    if spacing == "trailing":
        return (num_timesteps - 1 - (torch.arange(steps, dtype=torch.float64) * num_timesteps / steps).round().long()).flip(0)
    alpha_bar = schedule.alphas_cumprod.double().clamp(1e-12, 1.0 - 1e-12)
    lam = 0.5 * torch.log(alpha_bar / (1.0 - alpha_bar))  # decreasing in t
    if steps == 1:
        return torch.tensor([num_timesteps - 1])
    u = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    top = max(lam[-1].item(), LAMBDA_MIN)
    if spacing == "logsnr":
        targets = lam[0] + u * (top - lam[0])
    else:  # karras: sigma_i^(1/rho) evenly spaced from sigma_min to sigma_max, and lambda = -log(sigma)
        lo, hi = (-lam[0] / KARRAS_RHO).exp(), math.exp(-top / KARRAS_RHO)
        targets = -KARRAS_RHO * torch.log(lo + u * (hi - lo))
    nearest = (lam.view(1, -1) - targets.view(-1, 1)).abs().argmin(dim=1).tolist()
    nearest[-1] = num_timesteps - 1  # always from the largest timestep, where x_T is drawn
    return _strictly_increasing(nearest, num_timesteps)


@torch.no_grad()
def ddpm(
    predict_eps: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    spacing: str | None = None,
) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020, alg. 2) over all T steps, or a respaced subset (Nichol & Dhariwal 2021)."""
    timesteps = timestep_grid(schedule, steps, spacing)
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
        eps = predict_eps(x, t_batch)
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


@torch.no_grad()
def ddim(
    predict_eps: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    eta: float = 0.0,
    spacing: str | None = None,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) over respaced timesteps; eta = 0 is deterministic, eta = 1 is DDPM's posterior."""
    if not 0.0 <= eta <= 1.0:
        raise TinyDiffError(f"ddim's eta must be between 0 (deterministic) and 1 (as noisy as ddpm), got {eta}")
    timesteps = timestep_grid(schedule, default_steps(schedule, steps, DDIM_STEPS), spacing)
    alpha_bar = schedule.alphas_cumprod
    total = len(timesteps)
    for i in reversed(range(total)):
        t = int(timesteps[i])
        # 1. alpha_bar at this step and the previous kept step (1 past the last: clean data)
        ab_t = alpha_bar[t].item()
        ab_prev = alpha_bar[int(timesteps[i - 1])].item() if i > 0 else 1.0
        # 2. predict epsilon, then x_0 ("predicted x_0" in eq. 12), clipped to [-1, 1];
        #    epsilon is re-derived from the clipped x_0 so that both describe the same x_t
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = predict_eps(x, t_batch)
        x0 = predict_x0(eps, x, t_batch, schedule).clamp(-1.0, 1.0)
        eps = (x - ab_t**0.5 * x0) / (1.0 - ab_t) ** 0.5
        # 3. sigma_t(eta) (eq. 16): eta = 1 is the DDPM posterior standard deviation
        sigma = eta * ((1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev)) ** 0.5
        # 4. x_{t-1} = sqrt(ab_prev) x_0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z (eq. 12)
        x = ab_prev**0.5 * x0 + max(1.0 - ab_prev - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0.0:
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if callback is not None:
            callback({"i": total - i, "total": total, "t": t, "x": x, "x0": x0})
    return x


@torch.no_grad()
def dpm_solver_pp(
    predict_eps: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    spacing: str | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, alg. 2): multistep, second order, data prediction, in log-SNR lambda.

    Deterministic: ``generator`` is accepted for the shared signature and never used. The first
    step is first order, and so are the last two: into t = 0 (like ``lower_order_final`` in the
    authors' code) and from t = 0 to clean data (lambda = inf, where x becomes the predicted x_0).
    Classifier-free guidance needs nothing special: ``predict_eps`` already returns the guided
    epsilon, and the x_0 predicted from it is the guided data prediction this solver is built
    for; it is clipped to [-1, 1].
    """
    timesteps = timestep_grid(schedule, default_steps(schedule, steps, DPM_SOLVER_STEPS), spacing)
    alpha_bar = schedule.alphas_cumprod
    total = len(timesteps)
    x0_last, h_last = None, None
    for i in reversed(range(total)):
        t = int(timesteps[i])
        # 1. sigma here; alpha, sigma at the previous kept step (clean data past the last: alpha 1, sigma 0)
        ab_t = alpha_bar[t].item()
        ab_prev = alpha_bar[int(timesteps[i - 1])].item() if i > 0 else 1.0
        sigma_t, alpha_prev, sigma_prev = (1.0 - ab_t) ** 0.5, ab_prev**0.5, (1.0 - ab_prev) ** 0.5
        # 2. step size in log-SNR: h_i = lambda_{t_i} - lambda_{t_{i-1}} (alg. 2)
        h = log_snr(ab_prev) - log_snr(ab_t)
        # 3. data prediction x_theta(x_t, t): x_0 from epsilon (Ho et al. 2020, eq. 15), clipped to [-1, 1]
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = predict_eps(x, t_batch)
        x0 = predict_x0(eps, x, t_batch, schedule).clamp(-1.0, 1.0)
        # 4. D_i: x_theta itself on the first step and the last two (into t = 0 the evenly spaced
        #    grid's lambda step is so long that extrapolating overshoots); otherwise, with
        #    r_i = h_{i-1} / h_i, D_i = (1 + 1/(2 r_i)) x_theta(t_{i-1}) - 1/(2 r_i) x_theta(t_{i-2}) (alg. 2)
        if x0_last is None or i <= 1:
            d = x0
        else:
            r = h_last / h
            d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_last
        # 5. x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) D_i (alg. 2)
        x = (sigma_prev / sigma_t) * x - alpha_prev * math.expm1(-h) * d
        x0_last, h_last = x0, h
        if callback is not None:
            callback({"i": total - i, "total": total, "t": t, "x": x, "x0": x0})
    return x


@hookimpl
def tinydiff_register_samplers(register) -> None:
    """The built-in samplers."""
    register("ddpm", ddpm)
    register("ddim", ddim)
    register("dpm++", dpm_solver_pp)
