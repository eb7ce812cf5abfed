import pytest
import torch

from tinydiff.diffusion import EpsilonPredictor
from tinydiff.plugins import get_sampler, registry
from tinydiff.samplers import DEFAULT_SPACING, SPACINGS, respaced_timesteps, timestep_grid
from tinydiff.errors import TinyDiffError
from tinydiff.schedules import NoiseSchedule


class PointData(torch.nn.Module):
    """The optimal epsilon-predictor when all data is the single point c: eps = (x_t - sqrt(ab) c) / sqrt(1 - ab)."""

    def __init__(self, c: torch.Tensor, schedule: NoiseSchedule):
        super().__init__()
        self.c, self.s = c, schedule

    def forward(self, x, t):
        a, b = self.s.alpha_sigma(t, x.ndim)
        return (x - a * self.c) / b


class GaussianData(torch.nn.Module):
    """The optimal epsilon-predictor when each pixel of the data is N(mu, s^2): E[x_0 | x_t] in closed form."""

    def __init__(self, mu: float, s: float, schedule: NoiseSchedule):
        super().__init__()
        self.mu, self.std, self.s = mu, s, schedule

    def forward(self, x, t):
        ab = self.s.alphas_cumprod[t].float().view(-1, *([1] * (x.ndim - 1)))
        mean_x0 = self.mu + ab.sqrt() * self.std**2 * (x - ab.sqrt() * self.mu) / (ab * self.std**2 + 1 - ab)
        return (x - ab.sqrt() * mean_x0) / (1 - ab).sqrt()


BUILTIN = ["ddpm", "ddim", "dpm++"]
STOCHASTIC = {"ddpm"}  # ddim is stochastic only with eta > 0; dpm++ never
DEFAULT_STEPS = {"ddpm": None, "ddim": 50, "dpm++": 10}  # None: all T
MU, STD = 0.2, 0.3  # Gaussian data well inside [-1, 1], so clipping x_0 does not matter


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("steps", [None, 10])
def test_ddpm_lands_on_the_single_data_point(steps) -> None:
    s = NoiseSchedule.from_name("linear", 200)
    c = torch.linspace(-0.8, 0.8, 16).reshape(1, 1, 4, 4)
    x_T = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    out = get_sampler("ddpm")(EpsilonPredictor(PointData(c, s), s), x_T, s, steps=steps, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out, c.expand_as(out), atol=1e-4)


def test_ddpm_is_deterministic_with_a_generator_and_reports_progress() -> None:
    s = NoiseSchedule.from_name("cosine", 30)
    model = lambda x, t: 0.1 * x  # noqa: E731
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    seen = []
    run = lambda seed, cb=None: get_sampler("ddpm")(EpsilonPredictor(model, s), x_T, s, generator=torch.Generator().manual_seed(seed), callback=cb)  # noqa: E731
    a = run(5, seen.append)
    assert torch.equal(a, run(5))
    assert not torch.equal(a, run(6))
    assert [e["i"] for e in seen] == list(range(1, 31)) and seen[-1]["total"] == 30
    assert [e["t"] for e in seen] == list(range(29, -1, -1))


def test_ddpm_counts_network_evaluations() -> None:
    s = NoiseSchedule.from_name("linear", 40)
    d = EpsilonPredictor(lambda x, t: torch.zeros_like(x), s)
    get_sampler("ddpm")(d, torch.zeros(1, 1, 2, 2), s, steps=8, generator=torch.Generator())
    assert d.evaluations == 8


def test_respacing() -> None:
    assert torch.equal(respaced_timesteps(10, None), torch.arange(10))
    ts = respaced_timesteps(1000, 5)
    assert ts.tolist() == [0, 250, 500, 749, 999]
    with pytest.raises(TinyDiffError, match="between 1 and"):
        respaced_timesteps(10, 11)



# -- every built-in sampler ---------------------------------------------------------


def test_the_builtin_samplers_are_registered() -> None:
    assert set(BUILTIN) <= set(registry("sampler").names())


@pytest.mark.parametrize("name", BUILTIN)
def test_every_sampler_keeps_the_shape(name) -> None:
    s = NoiseSchedule.from_name("cosine", 20)
    x_T = torch.randn(3, 2, 5, 4, generator=gen(0))
    out = get_sampler(name)(EpsilonPredictor(lambda x, t: 0.1 * x, s), x_T, s, steps=6, generator=gen(1))
    assert out.shape == x_T.shape and out.dtype == x_T.dtype and torch.isfinite(out).all()


@pytest.mark.parametrize("name", BUILTIN)
def test_every_sampler_is_deterministic_with_a_generator(name) -> None:
    s = NoiseSchedule.from_name("cosine", 30)
    x_T = torch.randn(2, 1, 4, 4, generator=gen(0))
    run = lambda seed: get_sampler(name)(EpsilonPredictor(lambda x, t: 0.1 * x, s), x_T, s, steps=10, generator=gen(seed))  # noqa: E731
    a = run(5)
    assert torch.equal(a, run(5))
    assert torch.equal(a, run(6)) == (name not in STOCHASTIC)  # deterministic samplers draw nothing


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("steps", [5, 10, 20])
def test_every_sampler_lands_on_the_single_data_point(name, steps) -> None:
    s = NoiseSchedule.from_name("linear", 200)
    c = torch.linspace(-0.8, 0.8, 16).reshape(1, 1, 4, 4)
    x_T = torch.randn(8, 1, 4, 4, generator=gen(0))
    out = get_sampler(name)(EpsilonPredictor(PointData(c, s), s), x_T, s, steps=steps, generator=gen(1))
    assert torch.allclose(out, c.expand_as(out), atol=1e-3)


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("num_timesteps", [60, 12])
def test_every_sampler_makes_one_network_evaluation_per_step(name, num_timesteps) -> None:
    s = NoiseSchedule.from_name("cosine", num_timesteps)  # a default above T is capped at T
    for steps, expected in [(8, 8), (None, min(DEFAULT_STEPS[name] or num_timesteps, num_timesteps))]:
        d = EpsilonPredictor(lambda x, t: torch.zeros_like(x), s)
        get_sampler(name)(d, torch.zeros(1, 1, 2, 2), s, steps=steps, generator=gen(0))
        assert d.evaluations == expected, (steps, d.evaluations)


@pytest.mark.parametrize("name", BUILTIN)
def test_every_sampler_reports_each_step(name) -> None:
    s = NoiseSchedule.from_name("linear", 50)
    x_T = torch.randn(2, 1, 3, 3, generator=gen(0))
    seen = []
    out = get_sampler(name)(EpsilonPredictor(lambda x, t: 0.1 * x, s), x_T, s, steps=7, generator=gen(1), callback=seen.append)
    assert [e["i"] for e in seen] == list(range(1, 8)) and {e["total"] for e in seen} == {7}
    assert [e["t"] for e in seen] == respaced_timesteps(50, 7).flip(0).tolist()  # from T-1 down to 0
    assert all(e["x"].shape == e["x0"].shape == x_T.shape for e in seen)
    assert torch.equal(seen[-1]["x"], out)


def test_unknown_options_are_a_type_error() -> None:
    s = NoiseSchedule.from_name("cosine", 10)
    with pytest.raises(TypeError):
        get_sampler("dpm++")(EpsilonPredictor(lambda x, t: x, s), torch.zeros(1, 1, 2, 2), s, eta=0.5)


# -- ddim -------------------------------------------------------------------------


@pytest.mark.parametrize("eta", [-0.1, 1.5])
def test_ddim_eta_must_be_between_0_and_1(eta) -> None:
    s = NoiseSchedule.from_name("cosine", 10)
    with pytest.raises(TinyDiffError, match="eta must be between 0"):
        get_sampler("ddim")(EpsilonPredictor(lambda x, t: x, s), torch.zeros(1, 1, 2, 2), s, eta=eta)


@pytest.mark.parametrize("steps", [None, 9])
def test_ddim_with_eta_1_is_ddpm_step_for_step(steps) -> None:
    """With sigma = the posterior std (eq. 16, eta = 1), DDIM's eq. 12 is DDPM's posterior mean plus the same noise."""
    s = NoiseSchedule.from_name("cosine", 40)
    x_T = torch.randn(4, 1, 3, 3, generator=gen(0))
    model = lambda x, t: 0.5 * x + 0.1 * t.view(-1, 1, 1, 1)  # noqa: E731  not optimal, and x_0 gets clipped
    ddpm = get_sampler("ddpm")(EpsilonPredictor(model, s), x_T, s, steps=steps, generator=gen(1))
    ddim = get_sampler("ddim")(EpsilonPredictor(model, s), x_T, s, steps=steps or 40, generator=gen(1), eta=1.0)
    assert torch.allclose(ddim, ddpm, atol=1e-5)


def test_ddim_with_eta_1_and_ddpm_sample_gaussian_data_alike() -> None:
    """On N(mu, s^2) data with its exact denoiser, the samplers' means and stds match the data's and each other's.

    T = 1000: with DDPM's fixed reverse variance beta_tilde the chain is under-dispersed at small T
    (std 0.272 instead of 0.3 at T = 100, linear; the same from the closed-form linear-Gaussian chain).
    """
    s = NoiseSchedule.from_name("cosine", 1000)
    n = 4000
    se_mean, se_std = STD / n**0.5, STD / (2 * n) ** 0.5  # standard errors of the sample mean and std
    runs = {"ddpm": ("ddpm", None, {}), "ddim eta=1": ("ddim", 1000, {"eta": 1.0}),
            "ddim eta=0": ("ddim", 1000, {"eta": 0.0}), "dpm++": ("dpm++", 50, {})}  # fmt: skip
    out = {}
    for seed, (key, (name, steps, options)) in enumerate(runs.items()):
        g = gen(10 + seed)  # different noise for each: a test of distributions, not of identical draws
        x_T = torch.randn(1, 1, 40, n // 40, generator=g)  # n independent pixels
        x0 = get_sampler(name)(EpsilonPredictor(GaussianData(MU, STD, s), s), x_T, s, steps=steps, generator=g, **options)
        out[key] = x0.flatten().double()
    for key, x in out.items():
        assert abs(x.mean().item() - MU) < 4 * se_mean, (key, x.mean().item())
        assert abs(x.std().item() - STD) < 4 * se_std, (key, x.std().item())
    ddpm, ddim = out["ddpm"], out["ddim eta=1"]
    assert abs(ddpm.mean().item() - ddim.mean().item()) < 4 * 2**0.5 * se_mean
    assert abs(ddpm.std().item() - ddim.std().item()) < 4 * 2**0.5 * se_std


def gaussian_spread(name: str, spacing: str | None, steps: int | None = None) -> float:
    """std of 20,000 draws of N(0.3, 0.2^2) data with its exact denoiser (linear, T = 1000, as the bundled model), over 0.2."""
    s = NoiseSchedule.from_name("linear", 1000)
    g = gen(0)
    x_T = torch.randn(1, 1, 100, 200, generator=g)
    x0 = get_sampler(name)(EpsilonPredictor(GaussianData(0.3, 0.2, s), s), x_T, s, steps=steps, generator=g, spacing=spacing)
    assert abs(x0.mean().item() - 0.3) < 0.005
    return x0.std().item() / 0.2


@pytest.mark.parametrize("name", BUILTIN)
def test_every_sampler_at_its_default_steps_on_the_log_snr_grid_keeps_the_spread_of_gaussian_data(name) -> None:
    """Too few steps in the wrong places shrink the spread of what is drawn: less varied digits than the data.

    On the log-SNR grid: dpm++ (10 steps) 0.98 of the data's standard deviation, ddim (50) 0.955,
    ddpm (all T) 0.98. The standard error of the ratio at 20,000 draws is 0.5%.
    """
    assert abs(gaussian_spread(name, "logsnr") - 1.0) < 0.06


def test_the_evenly_spaced_grid_loses_spread_at_few_steps() -> None:
    """What the log-SNR grid fixes: 10 steps of dpm++ evenly spaced in t draw half the data's spread (50 steps of ddim: 0.88)."""
    assert gaussian_spread("dpm++", "uniform") < 0.6
    assert 0.8 < gaussian_spread("ddim", "uniform") < 0.92
    assert gaussian_spread("ddim", "uniform", steps=1000) > 0.97  # all T: no grid to choose


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_every_timestep_grid_is_increasing_and_starts_at_the_last_timestep(spacing, schedule) -> None:
    for num_timesteps in (1000, 50 if schedule == "linear" else 12):  # linear needs T >= 50 for betas below 1
        s = NoiseSchedule.from_name(schedule, num_timesteps)
        for steps in (1, 2, 5, 10, num_timesteps - 1, num_timesteps):
            grid = timestep_grid(s, steps, spacing)
            assert len(grid) == steps and grid.dtype == torch.long, (num_timesteps, steps, grid)
            assert grid[-1] == num_timesteps - 1 and grid[0] >= 0 and bool((grid.diff() > 0).all()), (num_timesteps, steps, grid)
        assert torch.equal(timestep_grid(s, None, spacing), torch.arange(num_timesteps))


def test_the_timestep_grids_put_their_steps_where_they_say() -> None:
    s = NoiseSchedule.from_name("linear", 1000)
    assert timestep_grid(s, 5, "uniform").tolist() == [0, 250, 500, 749, 999]
    assert timestep_grid(s, 4, "trailing").tolist() == [249, 499, 749, 999]  # diffusers' "trailing" for T = 1000
    lam = 0.5 * torch.log(s.alphas_cumprod.double() / (1 - s.alphas_cumprod.double()))
    steps = lam[timestep_grid(s, 10, "logsnr")].diff()
    assert steps.max() / steps.min() < 1.3  # even in log-SNR, to within the nearest whole timestep
    karras = timestep_grid(s, 10, "karras")
    assert karras[0] == 0 and (karras < 222).sum() == 3  # crowded at low noise (rho = 7): uniform has 2 below t = 222
    with pytest.raises(TinyDiffError, match="unknown timestep spacing 'even'; choose one of uniform, trailing, logsnr, karras"):
        timestep_grid(s, 10, "even")
    with pytest.raises(TinyDiffError, match="between 1 and"):
        timestep_grid(s, 1001, "logsnr")


# -- the deterministic samplers follow the probability-flow ODE ---------------------


def gaussian_flow(x_T: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """Where the exact ODE takes x_T for N(mu, s^2) data: it keeps the z-score of x_t (a 1-D monotone map
    between Gaussians), down to t = 0; the samplers' final step then denoises with E[x_0 | x_t]."""
    ab_T, ab_0 = schedule.alphas_cumprod[-1].item(), schedule.alphas_cumprod[0].item()
    z = (x_T.double() - ab_T**0.5 * MU) / (ab_T * STD**2 + 1 - ab_T) ** 0.5
    return MU + STD * z * ab_0**0.5 * STD / (ab_0 * STD**2 + 1 - ab_0) ** 0.5


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_dpm_solver_converges_to_the_ode_solution_faster_than_ddim(schedule) -> None:
    s = NoiseSchedule.from_name(schedule, 100)
    x_T = torch.linspace(-2.5, 2.5, 41).reshape(-1, 1, 1, 1)
    target = gaussian_flow(x_T, s)
    error = lambda name, steps: (get_sampler(name)(EpsilonPredictor(GaussianData(MU, STD, s), s), x_T, s, steps=steps) - target).abs().max().item()  # noqa: E731
    dpm = [error("dpm++", steps) for steps in (10, 20, 50)]
    ddim = [error("ddim", steps) for steps in (10, 20, 50)]
    assert dpm == sorted(dpm, reverse=True) and ddim == sorted(ddim, reverse=True)  # both converge
    assert all(d < e for d, e in zip(dpm, ddim))
    assert dpm[2] < 0.01 and dpm[2] < ddim[2] / 3  # second order: 50 steps get within 1% of the data range
    assert error("dpm++", 100) < 1e-3 < error("ddim", 100)


def test_the_default_sampler_is_the_measured_one_with_its_own_steps() -> None:
    from tinydiff.checkpoint import ModelFolderConfig
    from tinydiff.config import ModelConfig, SamplingOptions, ScheduleConfig
    from tinydiff.nn.unet import UNet
    from tinydiff.pipeline import Pipeline

    DEFAULT_SAMPLER = SamplingOptions().sampler
    assert DEFAULT_SAMPLER == "dpm++" and DEFAULT_SAMPLER in registry("sampler").names()
    cfg = ModelConfig(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[], groups=4)
    torch.manual_seed(0)
    model = UNet(cfg)
    for p in model.parameters():  # zero-initialised output layers would make every sampler agree
        torch.nn.init.normal_(p, std=0.05)
    pipe = Pipeline(ModelFolderConfig(model=cfg, schedule=ScheduleConfig(num_timesteps=100)), model.eval())
    calls = []
    default = pipe.sample(2, seed=3, callback=calls.append)
    assert torch.equal(default, pipe.sample(2, seed=3, sampler=DEFAULT_SAMPLER))
    assert len(calls) == 10 and not torch.equal(default, pipe.sample(2, seed=3, sampler="ddim", steps=10))
    assert torch.equal(default, pipe.sample(2, seed=3, spacing=DEFAULT_SPACING))  # the grid reaches the sampler
    other = next(s for s in SPACINGS if s != DEFAULT_SPACING)
    assert not torch.equal(default, pipe.sample(2, seed=3, spacing=other))
    with pytest.raises(TinyDiffError, match="unknown timestep spacing 'even'"):
        pipe.options(spacing="even")
    assert pipe.options().steps is None and pipe.options(steps=7).sampler == DEFAULT_SAMPLER
    assert pipe.options(sampler="ddim").steps is None and pipe.options(guidance_interval="all").guidance_interval is None
    with pytest.raises(TinyDiffError, match="101 sampler steps asked for, but this model has 100 diffusion timesteps"):
        pipe.sample(1, steps=101)
    with pytest.raises(TinyDiffError, match="unknown sampler 'dpm'"):
        pipe.options(sampler="dpm")
