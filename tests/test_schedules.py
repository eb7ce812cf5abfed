import math

import pytest
import torch

from tinydiff.errors import TinyDiffError
from tinydiff.schedules import NoiseSchedule, cosine, linear, sigmoid, validate_betas

SCHEDULES = ["linear", "cosine", "sigmoid"]


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("steps", [50, 1000])
def test_shape_bounds_and_monotone_alphas_cumprod(name: str, steps: int) -> None:
    s = NoiseSchedule.from_name(name, steps)
    assert s.betas.shape == (steps,)
    assert s.betas.dtype == torch.float64
    assert ((s.betas > 0) & (s.betas < 1)).all()
    assert (s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all(), "alpha_bar must strictly decrease"
    assert 0.9 < s.alphas_cumprod[0] < 1.0
    assert s.alphas_cumprod[-1] < 0.01, "x_T must be close to pure noise"


def test_linear_matches_ho_et_al() -> None:
    b = linear(1000)
    assert b[0].item() == pytest.approx(1e-4)
    assert b[-1].item() == pytest.approx(0.02)
    assert linear(500)[-1].item() == pytest.approx(0.04), "ends scale with 1000/T"


def test_cosine_matches_closed_form() -> None:
    T, s = 1000, 0.008
    ab = NoiseSchedule(cosine(T)).alphas_cumprod
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 250, 500, 900):
        assert ab[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-6)


def test_sigmoid_is_symmetric_around_the_middle() -> None:
    ab = NoiseSchedule(sigmoid(1000)).alphas_cumprod
    assert ab[499].item() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    "betas, match",
    [
        (torch.full((10,), float("nan")), "non-finite"),
        (torch.zeros(10), "outside"),
        (torch.ones(10), "outside"),
        (torch.full((9,), 0.1), "shape"),
        ([0.1] * 10, "tensor"),
    ],
)
def test_validation_rejects_bad_betas(betas, match: str) -> None:
    with pytest.raises(TinyDiffError, match=match):
        validate_betas(betas, 10, "bad")


def test_unknown_schedule_suggests_close_name() -> None:
    with pytest.raises(TinyDiffError) as info:
        NoiseSchedule.from_name("cosin", 10)
    assert str(info.value) == "unknown schedule 'cosin'; available: cosine, linear, sigmoid (did you mean 'cosine'?)"


def test_options_reach_the_schedule_and_bad_options_are_reported() -> None:
    assert NoiseSchedule.from_name("linear", 1000, beta_end=0.01).betas[-1].item() == pytest.approx(0.01)
    with pytest.raises(TinyDiffError, match="does not accept options"):
        NoiseSchedule.from_name("linear", 1000, wrong=1.0)
    with pytest.raises(TinyDiffError, match="outside"):
        NoiseSchedule.from_name("linear", 1000, beta_end=2.0)
