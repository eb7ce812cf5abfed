"""tinydiff.pipeline as a notebook uses it: pipe(prompt) on the bundled model, fresh seeds it reports, repr, device moves."""

from __future__ import annotations

import pytest
import torch

from tinydiff.errors import TinyDiffError
from tinydiff.pipeline import Pipeline, fresh_seed, resolve_device


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    return Pipeline.from_ref(device="cpu")


def test_calling_the_pipeline_with_a_prompt_draws_that_digit(pipe) -> None:
    from tinydiff.evaluate import predict

    out = pipe("a handwritten seven", num_images=4, seed=0)
    assert out.images.shape == (4, 28, 28) and out.images.dtype == torch.uint8
    assert out.prompts == ["a handwritten seven"] * 4 and out.seed == 0 and out.trajectory is None
    assert torch.equal(out.images, pipe.sample(4, prompts=["a handwritten seven"] * 4, seed=0))
    assert predict(out.images).tolist().count(7) >= 3


def test_a_list_of_prompts_gives_num_images_of_each_one_grid_row_each(pipe) -> None:
    out = pipe(["a bold 3", "a thin 5"], num_images=2, seed=1, steps=3)
    assert out.prompts == ["a bold 3", "a bold 3", "a thin 5", "a thin 5"] and out.nrow == 2
    assert out.grid_array(scale=1).shape == (2 + 2 * 30, 2 + 2 * 30)
    assert pipe("a bold 3", num_images=4, steps=3, seed=1).nrow is None  # one prompt: a square grid


def test_without_a_seed_every_call_draws_fresh_images_and_says_which_seed_draws_them_again(pipe) -> None:
    a = pipe("a handwritten seven", num_images=2, steps=3)
    b = pipe("a handwritten seven", num_images=2, steps=3)
    assert a.seed != b.seed and not torch.equal(a.images, b.images)
    assert torch.equal(pipe("a handwritten seven", num_images=2, steps=3, seed=a.seed).images, a.images)
    images = pipe.sample(2, prompts="a 4", steps=3)
    seed = pipe.last_seed
    assert seed is not None and torch.equal(pipe.sample(2, prompts="a 4", steps=3, seed=seed), images)
    assert pipe.last_seed == seed
    assert len({fresh_seed() for _ in range(20)}) == 20 and all(0 <= fresh_seed() < 2**31 for _ in range(20))


def test_one_string_where_a_list_of_prompts_goes_is_the_prompt_of_every_image(pipe) -> None:
    one = pipe.sample(3, prompts="a handwritten seven", seed=2, steps=3)
    assert torch.equal(one, pipe.sample(3, prompts=["a handwritten seven"] * 3, seed=2, steps=3))


def test_a_call_that_asks_for_nothing_is_refused_clearly(pipe) -> None:
    with pytest.raises(TinyDiffError, match="num_images must be a whole number, 1 or more, got 0"):
        pipe("a 7", num_images=0)
    with pytest.raises(TinyDiffError, match="empty list of prompts"):
        pipe([])
    with pytest.raises(TinyDiffError, match="names 3 and 5 separately"):
        pipe("a 3 or a 5")
    with pytest.raises(TinyDiffError, match="got 2 prompts for 3 images"):
        pipe.sample(3, prompts=["a 3", "a 5"])


def test_the_repr_says_what_the_model_is_where_it_runs_and_how_it_samples(pipe) -> None:
    lines = repr(pipe).splitlines()
    assert lines[0] == "Pipeline(tinydiff-mnist)"
    text = "\n".join(lines)
    for needle in ("1.17M parameters", "28x28 images", "tinytext, 2 layers of width 128", "prompts up to 15 words",
                   "linear schedule, T = 1000, predicts epsilon", "device     cpu",
                   "dpm++ sampler, its own steps, guidance 1.5 at sigma in (0.28, 5.42]"):  # fmt: skip
        assert needle in text, f"{needle!r} not in:\n{text}"


def test_from_ref_picks_the_device_as_the_command_line_does_and_to_moves_it(pipe) -> None:
    auto = Pipeline.from_ref()
    assert auto.device.type == resolve_device("auto").type
    assert auto.to("cpu") is auto and auto.device == torch.device("cpu")
    reference = pipe.sample(2, prompts="a 2", seed=3, steps=3)
    assert torch.equal(auto.sample(2, prompts="a 2", seed=3, steps=3), reference), "on the CPU, the CPU's images"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_to_cuda_and_back_gives_the_cpus_images_bit_for_bit(pipe) -> None:
    moved = Pipeline.from_ref(device="cpu").to("cuda")
    assert moved.device.type == "cuda" and "device     cuda" in repr(moved)
    on_gpu = moved.sample(4, prompts="a handwritten seven", seed=3, steps=3)
    assert on_gpu.shape == (4, 28, 28) and on_gpu.device.type == "cpu"
    reference = pipe.sample(4, prompts="a handwritten seven", seed=3, steps=3)
    assert torch.equal(moved.to("cpu").sample(4, prompts="a handwritten seven", seed=3, steps=3), reference)
