import pytest
import torch

from tinydiff.diffusion import Denoiser
from tinydiff.plugins import get_sampler
from tinydiff.samplers import respaced_timesteps
from tinydiff.errors import TinyDiffError
from tinydiff.schedules import NoiseSchedule


class PointData(torch.nn.Module):
    """The optimal epsilon-predictor when all data is the single point c: eps = (x_t - sqrt(ab) c) / sqrt(1 - ab)."""

    def __init__(self, c: torch.Tensor, schedule: NoiseSchedule):
        super().__init__()
        self.c, self.s = c, schedule

    def forward(self, x, t):
        a = self.s.gather(self.s.sqrt_alphas_cumprod, t, x.ndim)
        b = self.s.gather(self.s.sqrt_one_minus_alphas_cumprod, t, x.ndim)
        return (x - a * self.c) / b


@pytest.mark.parametrize("steps", [None, 10])
def test_ddpm_lands_on_the_single_data_point(steps) -> None:
    s = NoiseSchedule.from_name("linear", 200)
    c = torch.linspace(-0.8, 0.8, 16).reshape(1, 1, 4, 4)
    x_T = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    out = get_sampler("ddpm")(Denoiser(PointData(c, s), s), x_T, s, steps=steps, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out, c.expand_as(out), atol=1e-4)


def test_ddpm_is_deterministic_with_a_generator_and_reports_progress() -> None:
    s = NoiseSchedule.from_name("cosine", 30)
    model = lambda x, t: 0.1 * x  # noqa: E731
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    seen = []
    run = lambda seed, cb=None: get_sampler("ddpm")(Denoiser(model, s), x_T, s, generator=torch.Generator().manual_seed(seed), callback=cb)  # noqa: E731
    a = run(5, seen.append)
    assert torch.equal(a, run(5))
    assert not torch.equal(a, run(6))
    assert [e["i"] for e in seen] == list(range(1, 31)) and seen[-1]["total"] == 30
    assert [e["t"] for e in seen] == list(range(29, -1, -1))


def test_ddpm_counts_network_evaluations() -> None:
    s = NoiseSchedule.from_name("linear", 40)
    d = Denoiser(lambda x, t: torch.zeros_like(x), s)
    get_sampler("ddpm")(d, torch.zeros(1, 1, 2, 2), s, steps=8, generator=torch.Generator())
    assert d.evaluations == 8


def test_respacing() -> None:
    assert torch.equal(respaced_timesteps(10, None), torch.arange(10))
    ts = respaced_timesteps(1000, 5)
    assert ts.tolist() == [0, 250, 500, 749, 999]
    with pytest.raises(TinyDiffError, match="between 1 and"):
        respaced_timesteps(10, 11)
