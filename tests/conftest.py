"""Shared fixtures: MNIST from ../shared, tiny configs that train in seconds on a 2-core CPU."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"

if not os.environ.get("TINYDIFF_DATA_DIR") and SHARED_MNIST.is_dir():
    os.environ["TINYDIFF_DATA_DIR"] = str(SHARED_MNIST)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N runs N workers side by side: one thread each (and in the processes they start),
    # so N workers on N cores do not oversubscribe them
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def _installed_plugins() -> set[tuple[str, str, str]]:
    """The tinydiff entry points installed before the tests start (the README tour installs one), by name, value and place."""
    from importlib.metadata import entry_points

    return {(ep.name, ep.value, str(getattr(ep.dist, "_path", ""))) for ep in entry_points(group="tinydiff")}


_USER_PLUGINS = _installed_plugins()
if _USER_PLUGINS and "TINYDIFF_DISABLE_PLUGINS" not in os.environ:
    # the commands the tests run as processes see only the built-ins too
    os.environ["TINYDIFF_DISABLE_PLUGINS"] = ",".join(sorted({name for name, _, _ in _USER_PLUGINS}))


@pytest.fixture(autouse=True)
def _without_the_users_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see the built-ins and the plugins they make themselves, never the ones installed on this machine."""
    if not _USER_PLUGINS:
        return
    from tinydiff import plugins

    real = plugins.entry_points

    def test_made_only(*args: object, **kwargs: object) -> list:
        return [ep for ep in real(*args, **kwargs) if (ep.name, ep.value, str(getattr(ep.dist, "_path", ""))) not in _USER_PLUGINS]

    monkeypatch.setattr(plugins, "entry_points", test_made_only)
    plugins.reset()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("TINYDIFF_DATA_DIR", SHARED_MNIST))
    if not (path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file() and not (
        path / "train-images-idx3-ubyte.gz"
    ).is_file():
        pytest.fail(f"MNIST not found in {path}: set TINYDIFF_DATA_DIR to the folder holding MNIST/raw")
    return path


def read_npz(path: Path) -> dict:
    """The arrays of a `sample --out x.npz` file, with the file closed here, not left to the collector."""
    import numpy as np

    with np.load(path) as arrays:
        return dict(arrays)


def read_gif(data: bytes) -> tuple[np.ndarray, list[int]]:
    """Every frame of a GIF as a viewer shows it (composited, in gray levels), and each frame's duration in ms."""
    import io

    import numpy as np
    from PIL import Image

    frames, durations = [], []
    with Image.open(io.BytesIO(data)) as im:
        for k in range(im.n_frames):
            im.seek(k)
            frames.append(np.array(im.convert("L")))
            durations.append(im.info["duration"])
    return np.stack(frames), durations


SMALLEST_MODEL = dict(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[], groups=4, heads=1)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str], *, strip_colour: bool = False) -> tuple[int, str, str]:
    """Run the console entry point in-process; return (exit code, stdout, stderr), colour codes removed if asked."""
    from tinydiff.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    code = info.value.code
    code = code if isinstance(code, int) else (0 if code is None else 1)
    return (code, ANSI.sub("", out), ANSI.sub("", err)) if strip_colour else (code, out, err)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder of the smallest unconditional network, untrained, built once a test module."""
    from tinydiff.checkpoint import ModelFolderConfig, save_model_folder
    from tinydiff.config import ModelConfig, ScheduleConfig
    from tinydiff.nn.unet import UNet

    cfg = ModelConfig(**SMALLEST_MODEL)
    path = tmp_path_factory.mktemp("models") / "tiny"
    save_model_folder(path, ModelFolderConfig(model=cfg, schedule=ScheduleConfig(num_timesteps=50)), UNet(cfg).state_dict())
    return path


TINY_MODEL = {
    "base_channels": 16,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "attention_resolutions": [14],
    "groups": 4,
    "heads": 2,
}


def tiny_overrides(**train: object) -> dict:
    """A config small enough to train a few hundred steps in seconds."""
    settings = {"steps": 20, "batch_size": 16, "lr": 1e-3, "warmup_steps": 5, "device": "cpu",
                "log_every": 5, "sample_every": 10, "checkpoint_every": 10, "sample_num": 4, "sample_steps": 5}  # fmt: skip
    settings.update(train)
    return {"model": dict(TINY_MODEL), "schedule": {"num_timesteps": 50}, "train": settings}


@pytest.fixture
def tiny_config():
    from tinydiff.config import resolve_config

    def make(**train: object):
        return resolve_config("stage3", None, tiny_overrides(**train))

    return make


@pytest.fixture
def tiny_toml(tmp_path: Path) -> Path:
    """The tiny config as a TOML file, for driving `tinydiff train --config` from the command line."""
    path = tmp_path / "tiny.toml"
    path.write_text(
        """
preset = "stage3"  # the unconditional milestone model; the default preset (laptop) is a text model

[model]
base_channels = 16
channel_mult = [1, 2]
num_res_blocks = 1
attention_resolutions = [14]
groups = 4
heads = 2

[schedule]
num_timesteps = 50

[train]
lr = 1e-3
warmup_steps = 5
log_every = 5
sample_num = 4
sample_steps = 5
"""
    )
    return path


TINY_SWEEP = """
preset = "stage3"
steps = 10

[model]
base_channels = 16
channel_mult = [1, 2]
num_res_blocks = 1
attention_resolutions = [14]
groups = 4
heads = 2

[schedule]
num_timesteps = 50

[train]
batch_size = 16
warmup_steps = 5
log_every = 5
sample_every = 5
checkpoint_every = 5
sample_num = 4
sample_steps = 5
device = "cpu"
eval_every = 5
eval_num_per_digit = 2
eval_steps = 2

[grid]
schedule = ["linear", "cosine"]

[eval]
num_per_digit = 2
steps = 2
"""


def write_tiny_sweep(folder: Path, text: str = TINY_SWEEP) -> Path:
    """A sweep file of two tiny unconditional variants (the linear and cosine schedules), 10 steps each."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny-sweep.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, data_dir) -> Path:
    """The tiny sweep, trained, evaluated and uninterrupted: its folder of runs."""
    from tinydiff.sweep import load_sweep, run_sweep

    root = tmp_path_factory.mktemp("sweep")
    run_sweep(load_sweep(write_tiny_sweep(root)), root / "out")
    return root / "out"
