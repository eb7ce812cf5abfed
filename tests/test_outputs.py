"""tinydiff.outputs: the trajectory a sample records step by step, and the result a notebook gets from ``pipe(...)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import read_gif

from tinydiff.checkpoint import ModelFolderConfig
from tinydiff.config import ModelConfig, ScheduleConfig
from tinydiff.data import to_uint8
from tinydiff.errors import TinyDiffError
from tinydiff.images import decode_png, make_grid
from tinydiff.nn.unet import UNet
from tinydiff.outputs import PipelineOutput, TrajectoryRecorder
from tinydiff.pipeline import Pipeline

SAMPLERS = ["ddpm", "ddim", "dpm++"]


@pytest.fixture(scope="module")
def pipe() -> Pipeline:
    """A small unconditional UNet with random weights (none zero, so every step changes the images)."""
    cfg = ModelConfig(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[], groups=4)
    torch.manual_seed(0)
    model = UNet(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return Pipeline(ModelFolderConfig(model=cfg, schedule=ScheduleConfig(num_timesteps=100)), model.eval())


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_trajectory_runs_from_the_seeds_noise_to_the_images_the_seed_draws(pipe, sampler) -> None:
    traj = pipe.sample(3, seed=4, sampler=sampler, steps=5, trajectory=True)
    assert traj.x_t.shape == traj.pred_x0.shape == (6, 3, 28, 28) and traj.x_t.dtype == traj.pred_x0.dtype == torch.uint8
    assert traj.steps == 5 and traj.sigma.dtype == torch.float64
    x_T = torch.randn((3, 1, 28, 28), generator=torch.Generator().manual_seed(4))
    assert torch.equal(traj.x_t[0], to_uint8(x_T)), "the first moment is x_T, pure noise"
    assert torch.equal(traj.images, pipe.sample(3, seed=4, sampler=sampler, steps=5)), "the last is the sample itself"
    assert torch.equal(traj.pred_x0[-1], traj.x_t[-1])
    assert not torch.equal(traj.x_t[0], traj.x_t[-1]) and not torch.equal(traj.pred_x0[0], traj.pred_x0[-1])
    assert traj.sigma[0].item() == pytest.approx(pipe.schedule.sigma(torch.tensor([99])).item()) and traj.sigma[-1] == 0
    assert (traj.sigma.diff() < 0).all(), "the noise level falls at every step"


def test_the_recorded_predictions_are_the_samplers_and_the_callers_callback_still_runs(pipe) -> None:
    seen = []
    traj = pipe.sample(2, seed=1, sampler="ddim", steps=4, trajectory=True, callback=seen.append)
    assert [info["i"] for info in seen] == [1, 2, 3, 4]
    for k, info in enumerate(seen):
        assert torch.equal(traj.pred_x0[k], to_uint8(info["x0"]))
        assert torch.equal(traj.x_t[k + 1], to_uint8(info["x"]))
        assert traj.sigma[k].item() == pytest.approx(pipe.schedule.sigma(torch.tensor([info["t"]])).item())


def test_a_sampler_that_reports_no_step_has_no_trajectory(pipe) -> None:
    recorder = TrajectoryRecorder(torch.zeros(1, 1, 28, 28), pipe.schedule)
    with pytest.raises(TinyDiffError, match="reported no step"):
        recorder.trajectory()


def test_a_trajectory_is_a_gif_to_save_and_plays_inline_in_a_notebook(pipe, tmp_path) -> None:
    traj = pipe.sample(4, seed=2, steps=3, trajectory=True)
    traj.save_gif(tmp_path / "d.gif", nrow=2, scale=2)
    frames, _ = read_gif((tmp_path / "d.gif").read_bytes())
    np.testing.assert_array_equal(frames, traj.frames(nrow=2, scale=2))
    assert traj._repr_html_().startswith('<img src="data:image/gif;base64,R0lGOD')  # "GIF8" in base64
    assert repr(traj) == f"Trajectory(4 images 28x28, 3 steps, sigma {traj.sigma[0].item():.3g} to 0)"


def output(pipe: Pipeline, **kwargs) -> PipelineOutput:
    images = pipe.sample(6, seed=5, steps=2)
    return PipelineOutput(images=images, prompts=["a 3"] * 3 + ["a 5"] * 3, seed=5, nrow=3, **kwargs)


def test_the_images_come_as_a_tensor_as_pil_images_and_as_a_grid(pipe) -> None:
    out = output(pipe)
    pil = out.pil_images
    assert len(pil) == 6 and all(im.mode == "L" and im.size == (28, 28) for im in pil)
    assert all(np.array_equal(np.asarray(im), a) for im, a in zip(pil, out.images.numpy()))
    native = out.grid_array(scale=1)
    np.testing.assert_array_equal(native, make_grid(out.images.numpy(), nrow=3))  # one row per prompt
    grid = out.grid()
    assert grid.mode == "L" and grid.size == (4 * native.shape[1], 4 * native.shape[0])
    np.testing.assert_array_equal(np.asarray(grid)[::4, ::4], native)
    np.testing.assert_array_equal(decode_png(out._repr_png_()), np.asarray(grid)), "Jupyter shows the grid"
    assert repr(out) == "PipelineOutput(6 images 28x28, 'a 3' x3, 'a 5' x3, seed=5)"
    with pytest.raises(TinyDiffError, match="scale must be a whole number, 1 or more"):
        out.grid(scale=0)


def test_an_output_saves_its_animation_only_when_it_has_the_trajectory(pipe, tmp_path) -> None:
    with pytest.raises(TinyDiffError, match=r"trajectory=True"):
        output(pipe).save_gif(tmp_path / "x.gif")
    assert not (tmp_path / "x.gif").exists()
    traj = pipe.sample(6, seed=5, steps=2, trajectory=True)
    out = output(pipe, trajectory=traj)
    out.save_gif(tmp_path / "x.gif", scale=1)
    np.testing.assert_array_equal(read_gif((tmp_path / "x.gif").read_bytes())[0], traj.frames(nrow=3, scale=1))
    assert repr(out).endswith("seed=5, trajectory of 2 steps)")
