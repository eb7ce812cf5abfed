import pytest
import torch

from tinydiff.diffusion import EpsilonPredictor, predict_x0, q_sample, training_loss
from tinydiff.schedules import NoiseSchedule


@pytest.mark.parametrize("t", [0, 100, 500, 999])
def test_q_sample_matches_closed_form_mean_and_variance(t: int) -> None:
    """x_t given a fixed x_0 has mean sqrt(alpha_bar) x_0 and variance 1 - alpha_bar (Ho et al. eq. 4)."""
    s = NoiseSchedule.from_name("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(1, 1, 4, 4, generator=g) * 2 - 1
    n = 20_000
    x0s = x0.expand(n, -1, -1, -1)
    ts = torch.full((n,), t)
    xt = q_sample(x0s, ts, torch.randn(x0s.shape, generator=g), s)
    ab = s.alphas_cumprod[t].item()
    mean, var = ab**0.5 * x0[0], torch.full_like(x0[0], 1 - ab)
    assert torch.allclose(xt.mean(0), mean, atol=4 * (1 - ab) ** 0.5 / n**0.5 + 1e-6)
    assert torch.allclose(xt.var(0), var, rtol=0.05)


def test_q_sample_at_the_end_is_nearly_standard_normal() -> None:
    s = NoiseSchedule.from_name("cosine", 1000)
    x0 = torch.ones(4000, 1, 2, 2)
    xt = q_sample(x0, torch.full((4000,), 999), torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)), s)
    assert abs(xt.mean().item()) < 0.05
    assert abs(xt.std().item() - 1) < 0.05


class Oracle(torch.nn.Module):
    """Returns exactly what an objective asks for, given the true x_0 and noise."""

    def __init__(self, x0, noise, schedule, objective):
        super().__init__()
        self.x0, self.noise, self.s, self.objective = x0, noise, schedule, objective

    def forward(self, x_t, t):
        a, b = self.s.alpha_sigma(t, 4)
        return {"epsilon": self.noise, "x0": self.x0, "v": a * self.noise - b * self.x0}[self.objective]


@pytest.mark.parametrize("objective", ["epsilon", "x0", "v"])
def test_each_objective_has_zero_loss_for_its_oracle_and_converts_to_true_eps(objective: str) -> None:
    s = NoiseSchedule.from_name("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 1, 6, 6, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(10, 990, (8,), generator=g)
    oracle = Oracle(x0, noise, s, objective)
    assert training_loss(oracle, x0, t, noise, s, objective=objective).item() < 1e-10
    eps = EpsilonPredictor(oracle, s, objective=objective)(q_sample(x0, t, noise, s), t)
    assert torch.allclose(eps, noise, atol=1e-3)
    assert torch.allclose(predict_x0(eps, q_sample(x0, t, noise, s), t, s), x0, atol=1e-2)


def test_loss_is_mse_of_a_wrong_prediction() -> None:
    s = NoiseSchedule.from_name("linear", 100)
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    noise = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    loss = training_loss(zero, torch.zeros_like(noise), torch.zeros(64, dtype=torch.long), noise, s)
    assert loss.item() == pytest.approx(noise.pow(2).mean().item())


@pytest.mark.parametrize("objective", ["epsilon", "v", "x0"])
def test_min_snr_gamma_weights_each_image_by_its_clipped_snr(objective: str) -> None:
    s = NoiseSchedule.from_name("linear", 1000)
    torch.manual_seed(0)
    x0, noise = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    t = torch.tensor([0, 10, 100, 400, 800, 999])
    model = lambda x, t: 0.5 * x  # noqa: E731 - any fixed wrong prediction
    plain = training_loss(model, x0, t, noise, s, objective=objective)
    # a gamma above every SNR changes nothing for epsilon; the weight is min(snr, gamma) in the objective's units
    snr = s.snr(t)
    assert torch.allclose(snr.double(), s.alphas_cumprod[t] / (1 - s.alphas_cumprod[t]), rtol=1e-5)
    clipped = snr.clamp(max=5.0)
    weight = {"epsilon": clipped / snr, "v": clipped / (snr + 1), "x0": clipped}[objective]
    a = s.sqrt_alphas_cumprod[t].float().view(-1, 1, 1, 1)
    sd = s.sqrt_one_minus_alphas_cumprod[t].float().view(-1, 1, 1, 1)
    target = {"epsilon": noise, "x0": x0, "v": a * noise - sd * x0}[objective]
    per_image = ((model(a * x0 + sd * noise, t) - target) ** 2).flatten(1).mean(1)
    weighted = training_loss(model, x0, t, noise, s, objective=objective, min_snr_gamma=5.0)
    torch.testing.assert_close(weighted, (weight * per_image).mean(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(plain, per_image.mean(), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(weighted, plain)
    if objective == "epsilon":
        huge = training_loss(model, x0, t, noise, s, objective=objective, min_snr_gamma=1e12)
        torch.testing.assert_close(huge, plain, rtol=1e-5, atol=1e-7)


# -- MultiDiffusion: a wide canvas from square windows (Bar-Tal et al. 2023) ----------------


def test_number_canvas_windows_cover_the_canvas_and_overlap_like_handwriting() -> None:
    from tinydiff.diffusion import number_canvas

    assert number_canvas(1) == (28, [0])
    assert number_canvas(4) == (94, [0, 22, 44, 66])  # 20-pixel digit boxes 2 pixels apart
    width, offsets = number_canvas(8)
    assert offsets[-1] + 28 == width == 182


class Windows:
    """A stand-in denoiser: records each batch it is called on, answers ``fn(x, t)``."""

    def __init__(self, fn) -> None:
        self.fn, self.calls = fn, []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append((tuple(x.shape), t.clone()))
        return self.fn(x, t)


def test_multidiffusion_with_constant_windows_gives_that_constant_everywhere() -> None:
    from tinydiff.diffusion import MultiDiffusion, number_canvas

    width, offsets = number_canvas(3)
    inner = Windows(lambda x, t: torch.full_like(x, 0.37))
    eps = MultiDiffusion(inner, offsets, 28)(torch.randn(2, 1, 28, width), torch.tensor([5, 9]))
    assert eps.shape == (2, 1, 28, width)
    assert torch.allclose(eps, torch.full_like(eps, 0.37), atol=1e-7)  # overlaps are averages of equal values
    # the 6 windows of 2 canvases went through in one call, canvas by canvas, each with its canvas's t
    assert [shape for shape, _ in inner.calls] == [(6, 1, 28, 28)]
    assert inner.calls[0][1].tolist() == [5, 5, 5, 9, 9, 9]


def test_multidiffusion_averages_the_windows_where_they_overlap() -> None:
    from tinydiff.diffusion import MultiDiffusion

    # window j answers j: pixels only window 0 covers get 0, those of both windows 0.5, window 1's alone 1
    inner = Windows(lambda x, t: torch.arange(len(x), dtype=x.dtype).view(-1, 1, 1, 1).expand_as(x).clone())
    eps = MultiDiffusion(inner, [0, 22], 28)(torch.zeros(1, 1, 28, 50), torch.tensor([3]))
    row = eps[0, 0, 0]
    assert row[:22].eq(0).all() and row[22:28].eq(0.5).all() and row[28:].eq(1).all()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
def test_one_window_is_single_digit_sampling_bit_for_bit_and_wide_canvases_keep_their_shape(sampler: str) -> None:
    from tinydiff.diffusion import MultiDiffusion, number_canvas
    from tinydiff.plugins import get_sampler

    torch.manual_seed(0)
    schedule = NoiseSchedule.from_name("cosine", 20)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)  # position-independent, so any window width works
    eps = EpsilonPredictor(lambda x, t: net(x) * 0.1, schedule)
    draw = get_sampler(sampler)
    x_T = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        plain = draw(eps, x_T, schedule, steps=5, generator=torch.Generator().manual_seed(1))
        fused = draw(MultiDiffusion(eps, [0], 28), x_T, schedule, steps=5, generator=torch.Generator().manual_seed(1))
        assert torch.equal(plain, fused)
        width, offsets = number_canvas(4)
        wide = draw(MultiDiffusion(eps, offsets, 28), torch.randn(2, 1, 28, width), schedule, steps=5,
                    generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert wide.shape == (2, 1, 28, width) and wide.abs().max() <= 1.0 + 1e-6
