"""Bad input through the real entry point: one ``error:`` line on stderr, non-zero exit, nothing written.

Every case runs ``tinydiff.cli.main(args)`` in-process from an empty working directory
(``tmp_path``) and checks that

- it exits non-zero (1 for errors about the input, 2 for usage errors),
- stderr is exactly one non-empty line starting with ``error:``, with no traceback,
- the line names the thing that is wrong,
- no file or folder appeared in the working directory (where ``runs/`` and ``samples.png`` go
  by default), which also holds every run directory and damaged model folder used here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

import conftest
from conftest import SMALLEST_MODEL
from tinydiff.cli import main

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
if not os.environ.get("TINYDIFF_DATA_DIR") and SHARED_MNIST.is_dir():
    os.environ["TINYDIFF_DATA_DIR"] = str(SHARED_MNIST)

MNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


def mnist_raw() -> Path:
    root = Path(os.environ.get("TINYDIFF_DATA_DIR", SHARED_MNIST))
    raw = root / "MNIST" / "raw"
    return raw if (raw / MNIST_FILES[0]).is_file() else root


# -- helpers ------------------------------------------------------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the console entry point in-process; return (exit code, stdout, stderr without colour codes)."""
    return conftest.run_cli(args, capsys, strip_colour=True)


def tree(root: Path) -> set[str]:
    """Every file and folder below ``root``, as relative paths (folders end in '/')."""
    return {str(p.relative_to(root)) + ("/" if p.is_dir() and not p.is_symlink() else "") for p in root.rglob("*")}


def assert_one_error_line(code: int, out: str, err: str, expected_code: int, needles: list[str]) -> str:
    assert code == expected_code, f"exit code {code}, expected {expected_code}; stderr: {err!r}"
    assert code != 0
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"stderr must be exactly one non-empty line, got {len(lines)}: {err!r}"
    line = lines[0]
    assert line.startswith("error:"), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    assert out == "", f"nothing should go to stdout on error, got {out!r}"
    return line


def corrupt_deflate(data: bytes) -> bytes:
    """A copy of a .gz file with one byte of its deflate stream changed so that zlib itself rejects it.

    (Not just a CRC mismatch: decompression fails with ``zlib.error``, e.g. "invalid distance too far back".)
    """
    for pos in range(64, len(data) - 8, 7):
        bad = data[:pos] + bytes([data[pos] ^ 0x55]) + data[pos + 1 :]
        try:
            zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bad)
        except zlib.error:
            return bad
    raise AssertionError("no corruption found that zlib rejects")  # pragma: no cover


# -- a tiny model folder, built once --------------------------------------------------

TINY = SMALLEST_MODEL


# -- training runs: a tiny finished run (step 10 of 10, one checkpoint), copied and damaged per case -----------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import tiny_overrides

    from tinydiff.config import resolve_config
    from tinydiff.train import train

    run = tmp_path_factory.mktemp("runs") / "run"
    train(resolve_config("stage3", None, tiny_overrides(steps=10, checkpoint_every=10, sample_every=10)), run)
    return run


STATE = "run/checkpoints/step-000010/training_state.safetensors"


def _run_args(damage: Callable[[Ctx], None] | None = None, *extra: str) -> Callable[[Ctx], list[str]]:
    """`tinydiff train --run-dir run --resume --steps 20` on a copy of the trained run, damaged first."""

    def setup(ctx: Ctx) -> list[str]:
        shutil.copytree(ctx.run, ctx.tmp / "run", symlinks=True)
        if damage is not None:
            damage(ctx)
        return ["train", "--run-dir", "run", "--resume", "--steps", "20", *extra]

    return setup


def _edit_state(edit: Callable[[dict, dict], None]) -> Callable[[Ctx], None]:
    """Rewrite the checkpoint's training state: ``edit(tensors, metadata)`` changes them in place."""

    def damage(ctx: Ctx) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        path = ctx.tmp / STATE
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata())
        edit(tensors, meta)
        save_file(tensors, str(path), metadata=meta)

    return damage


def _set_tensor(name: str, value: Callable[[dict], object]) -> Callable[[Ctx], None]:
    return _edit_state(lambda t, m: t.__setitem__(name, value(t)))


def _drop_tensor(name: str) -> Callable[[Ctx], None]:
    return _edit_state(lambda t, m: t.pop(name))


def _run_file(name: str, data: bytes | str) -> Callable[[Ctx], None]:
    def damage(ctx: Ctx) -> None:
        path = ctx.tmp / "run" / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return damage


def _run_config(edit: Callable[[dict], None]) -> Callable[[Ctx], None]:
    def damage(ctx: Ctx) -> None:
        path = ctx.tmp / "run" / "config.json"
        record = json.loads(path.read_text())
        edit(record)
        path.write_text(json.dumps(record))

    return damage


def _raw_bytes(name: str, change: Callable[[bytes], bytes]) -> Callable[[Ctx], None]:
    def damage(ctx: Ctx) -> None:
        path = ctx.tmp / name
        path.write_bytes(change(path.read_bytes()))

    return damage


def _huge_sparse(name: str) -> Callable[[Ctx], None]:
    def damage(ctx: Ctx) -> None:
        with open(ctx.tmp / "run" / name, "wb") as f:
            f.truncate(64 * 2**20)  # 64 MB of nothing, without the disk space

    return damage


def _replace_with_folder(name: str) -> Callable[[Ctx], None]:
    def damage(ctx: Ctx) -> None:
        path = ctx.tmp / "run" / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        path.mkdir()

    return damage


def _lock_symlink(ctx: Ctx) -> None:
    _write(ctx, "precious.txt", "keep me")
    (ctx.tmp / "run" / ".lock").symlink_to(ctx.tmp / "precious.txt")


def _gz(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, compresslevel=1, mtime=0)


def _idx_data(ctx: Ctx, *, size: int = 28, n: int = 100, bad_label: int | None = None) -> list[str]:
    """A data folder with a small IDX training set of ``n`` images of ``size`` x ``size``."""
    import struct

    data = ctx.tmp / "data"
    data.mkdir()
    labels = bytes(i % 10 for i in range(n))
    if bad_label is not None:
        labels = labels[:7] + bytes([bad_label]) + labels[8:]
    (data / MNIST_FILES[0]).write_bytes(_gz(struct.pack(">IIII", 2051, n, size, size) + bytes(n * size * size)))
    (data / MNIST_FILES[1]).write_bytes(_gz(struct.pack(">II", 2049, n) + labels))
    return ["train", "--preset", "stage3", "--data-dir", str(data), "--device", "cpu", "--batch-size", "8", "--steps", "1"]


def _train_only_data(ctx: Ctx) -> list[str]:
    """MNIST's training files only: `--eval-every` needs the test set, and it cannot be downloaded."""
    data = ctx.tmp / "data"
    data.mkdir()
    raw = mnist_raw()
    for name in MNIST_FILES[:2]:
        (data / name).symlink_to(raw / name)

    def offline(url: object, *args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    ctx.monkeypatch.setattr(urllib.request, "urlopen", offline)
    ctx.monkeypatch.setattr("tinydiff.data.mirrors", lambda: ["https://mirror.invalid/mnist/"])
    return ["train", "--preset", "stage3", "--data-dir", str(data), "--device", "cpu", "--eval-every", "5", "--steps", "10"]


def _header_length(data: bytes) -> bytes:
    return (2**62).to_bytes(8, "little") + data[8:]  # a header "of 4 EiB": a lie about the file


def _torch():
    import torch

    return torch


@pytest.fixture(scope="module")
def text_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tinydiff.checkpoint import ModelFolderConfig, save_model_folder
    from tinydiff.config import ModelConfig, ScheduleConfig, TextConfig
    from tinydiff.nn.text import Tokenizer
    from tinydiff.nn.unet import UNet

    cfg = ModelConfig(**TINY, text=TextConfig(dim=8, layers=1, heads=2, max_length=6), cross_attention_resolutions=[14])
    tokenizer = Tokenizer(["a", "handwritten", "seven", "three"], max_length=6)
    path = tmp_path_factory.mktemp("models") / "tinytext"
    weights = UNet(cfg, tokenizer=tokenizer).state_dict()
    save_model_folder(path, ModelFolderConfig(model=cfg, schedule=ScheduleConfig(num_timesteps=50)), weights, tokenizer)
    return path


# -- the table ----------------------------------------------------------------------


@dataclass
class Ctx:
    tmp: Path  # the working directory
    model: Path  # a good model folder (outside tmp; copy it before damaging it)
    monkeypatch: pytest.MonkeyPatch
    run: Path | None = None  # a trained run (outside tmp; cases copy it into tmp before damaging it)
    text_model: Path | None = None  # a good text model folder (config.json, model.safetensors, vocab.json)

    def copy_model(self, name: str = "model") -> Path:
        dest = self.tmp / name
        shutil.copytree(self.model, dest)
        return dest

    def copy_text_model(self, name: str = "textmodel") -> Path:
        assert self.text_model is not None
        dest = self.tmp / name
        shutil.copytree(self.text_model, dest)
        return dest


@dataclass
class Case:
    id: str
    setup: Callable[[Ctx], list[str]]
    needles: Callable[[Ctx], list[str]]
    code: int = 1


def fixed(args: list[str]) -> Callable[[Ctx], list[str]]:
    return lambda ctx: list(args)


def words(*needles: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: list(needles)


def _write(ctx: Ctx, name: str, text: str) -> Path:
    path = ctx.tmp / name
    path.write_text(text, encoding="utf-8")
    return path


def _config_args(text: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        return ["train", "--config", str(_write(ctx, "bad.toml", text)), "--device", "cpu"]

    return setup


def _data_dir_is_file(ctx: Ctx) -> list[str]:
    _write(ctx, "data.txt", "not a folder")
    return ["train", "--preset", "stage1", "--data-dir", str(ctx.tmp / "data.txt"), "--device", "cpu"]


def _data_dir_without_mnist(ctx: Ctx) -> list[str]:
    (ctx.tmp / "data").mkdir(exist_ok=True)
    calls: list[str] = []

    def offline(url: object, *args: object, **kwargs: object) -> None:
        calls.append(str(getattr(url, "full_url", url)))
        raise OSError("network is unreachable")

    ctx.monkeypatch.setattr(urllib.request, "urlopen", offline)
    ctx.monkeypatch.setattr("tinydiff.data.mirrors", lambda: ["https://mirror-a.invalid/mnist/", "https://mirror-b.invalid/mnist/"])
    ctx.calls = calls  # type: ignore[attr-defined]
    # a failed download removes the data/MNIST/raw it made: nothing at all is left behind
    return ["train", "--preset", "stage1", "--data-dir", str(ctx.tmp / "data"), "--device", "cpu"]


def _data_dir_with_corrupt_labels(ctx: Ctx) -> list[str]:
    data = ctx.tmp / "data"
    data.mkdir()
    raw = mnist_raw()
    (data / MNIST_FILES[0]).symlink_to(raw / MNIST_FILES[0])
    (data / MNIST_FILES[1]).write_bytes(corrupt_deflate((raw / MNIST_FILES[1]).read_bytes()))
    return ["train", "--preset", "stage1", "--data-dir", str(data), "--device", "cpu"]


def _data_dir_with_crc_mismatch(ctx: Ctx) -> list[str]:
    data = ctx.tmp / "data"
    data.mkdir()
    raw = mnist_raw()
    (data / MNIST_FILES[0]).symlink_to(raw / MNIST_FILES[0])
    labels = bytearray((raw / MNIST_FILES[1]).read_bytes())
    labels[-8] ^= 0xFF  # the gzip trailer's CRC32
    (data / MNIST_FILES[1]).write_bytes(bytes(labels))
    return ["train", "--preset", "stage1", "--data-dir", str(data), "--device", "cpu"]


def _resume_empty(ctx: Ctx) -> list[str]:
    (ctx.tmp / "run").mkdir()
    return ["train", "--resume", "--run-dir", str(ctx.tmp / "run")]


def _model_args(damage: Callable[[Path], None]) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        folder = ctx.copy_model()
        damage(folder)
        return ["sample", "--model", str(folder), "--num", "1", "--no-preview"]

    return setup


def _truncate_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


def _corrupt_config(folder: Path) -> None:
    cfg = folder / "config.json"
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text[: len(text) // 2], encoding="utf-8")


def _unknown_config_key(folder: Path) -> None:
    cfg = folder / "config.json"
    raw = json.loads(cfg.read_text(encoding="utf-8"))
    raw["model"]["colour"] = "blue"
    cfg.write_text(json.dumps(raw), encoding="utf-8")


def _neither(ctx: Ctx) -> list[str]:
    (ctx.tmp / "stuff").mkdir()
    _write(ctx, "stuff/notes.txt", "hello")
    return ["sample", "--model", str(ctx.tmp / "stuff"), "--no-preview"]


def _model_is_file(ctx: Ctx) -> list[str]:
    folder = ctx.copy_model()
    return ["sample", "--model", str(folder / "model.safetensors"), "--no-preview"]


def _tensorboard_missing(ctx: Ctx) -> list[str]:
    import sys

    ctx.monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    return ["train", "--preset", "stage1", "--tracker", "tensorboard", "--steps", "1", "--device", "cpu"]


SWEEP = 'preset = "stage1"\nsteps = 5\n[variants.a]\n[variants.b]\nschedule = "cosine"\n[variants.c]\ntrain = { lrr = 0.1 }\n'


def _sweep_args(text: str, *extra: str) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        return ["sweep", str(_write(ctx, "sweep.toml", text)), *extra]

    return setup


def _eval_missing_data(ctx: Ctx) -> list[str]:
    def sampled(*args: object, **kwargs: object) -> None:
        raise AssertionError("eval sampled before it checked its data folder")

    ctx.monkeypatch.setattr("tinydiff.pipeline.Pipeline.sample", sampled)
    return ["eval", "--model", str(ctx.model), "--num-per-digit", "2", "--data-dir", str(ctx.tmp / "nope")]


def _read_only_run_dir(ctx: Ctx) -> None:
    """As root, permissions do not stop a write: the system's answer for a read-only folder is given instead."""
    import errno

    real_open = os.open

    def refuse(path: object, *args: object, **kwargs: object) -> int:
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    ctx.monkeypatch.setattr(os, "open", refuse)


RUN_CASES = [
    Case("eval-data-dir-missing-checked-before-sampling", _eval_missing_data, lambda ctx: [str(ctx.tmp / "nope"), "does not exist"]),
    # bad inputs reported by users, about training
    Case("train-seed-beyond-range", fixed(["train", "--seed", "9223372036854775807"]), words("train.seed", "4294967295")),
    Case("train-seed-negative", fixed(["train", "--seed", "-1"]), words("train.seed", "got -1")),
    Case("resume-optimizer-tensor-wrong-shape", _run_args(_set_tensor("optim/0/exp_avg", lambda t: _torch().zeros(3, 3))),
         words("step-000010 is inconsistent", "optim/0/exp_avg", "(3, 3)", "move step-000010")),
    Case("resume-data-order-index-beyond-data", _run_args(_set_tensor("data/order", lambda t: t["data/order"].clone().index_fill_(0, _torch().tensor([3]), 10**6))),
         words("step-000010 is inconsistent", "index 1000000 beyond the 60000 images")),
    Case("resume-steps-below-the-run", _run_args(None, "--steps", "3"), words("at step 10", "--steps 3", "above 10")),
    Case("train-lr-inf", _config_args("[train]\nlr = inf\n"), words("train.lr", "finite")),
    Case("train-attention-where-a-residual-goes", _config_args('preset = "stage3"\n[model.blocks]\nres = "attention"\n'),
         words("model.blocks.res = 'attention'", "does not build a UNet")),
    Case("train-in-channels-3", _config_args('preset = "stage3"\n[model]\nin_channels = 3\n'), words("in_channels = 3", "1 channel")),
    Case("train-mnist-label-200", lambda ctx: _idx_data(ctx, bad_label=200), words("label 200", "item 7", "0-9")),
    Case("train-image-size-56", _config_args('preset = "stage3"\n[model]\nimage_size = 56\n'), words("28x28", "image_size = 56")),
    Case("train-idx-of-32x32-images", lambda ctx: _idx_data(ctx, size=32), words("32x32", "image_size = 28", "set image_size = 32")),
    Case("train-sample-steps-5000", _config_args('preset = "stage3"\n[train]\nsample_steps = 5000\n'),
         words("train.sample_steps", "5000 sampler steps", "1000 diffusion timesteps")),
    Case("train-eval-every-without-test-set", _train_only_data, words("could not be downloaded", MNIST_FILES[2])),
    # run directories someone else made, edited or damaged
    Case("run-dir-is-a-file", lambda ctx: ["train", "--run-dir", str(_write(ctx, "notes.txt", "x"))], words("notes.txt", "is a file")),
    Case("run-dir-empty", fixed(["train", "--run-dir", ""]), words("--run-dir", "not the current directory")),
    Case("run-dir-under-a-file", lambda ctx: ["train", "--preset", "stage3", "--device", "cpu", "--steps", "1",
                                              "--run-dir", str(_write(ctx, "notes.txt", "x") / "run")],
         words("cannot create the run directory", "notes.txt")),
    Case("resume-run-config-a-json-list", _run_args(_run_file("config.json", "[]")), words("config.json", "does not hold a run's config")),
    Case("resume-run-config-train-a-number", _run_args(_run_config(lambda r: r["config"].__setitem__("train", 5))),
         words("config.json", "train", "edited or is damaged")),
    Case("resume-run-config-not-utf8", _run_args(_run_file("config.json", b"\xff\xfe{")), words("config.json", "not valid JSON")),
    Case("resume-run-config-nested-deeply", _run_args(_run_file("config.json", "[" * 200_000)), words("config.json", "not valid JSON")),
    Case("resume-run-config-huge", _run_args(_huge_sparse("config.json")), words("config.json", "67108864 bytes")),
    Case("resume-run-config-a-folder", _run_args(_replace_with_folder("config.json")), words("config.json", "not a regular file")),
    Case("resume-run-config-lying-batch-size", _run_args(_run_config(lambda r: r["config"]["train"].__setitem__("batch_size", -3))),
         words("config.json", "train.batch_size", "got -3")),
    Case("resume-checkpoints-a-file", _run_args(lambda ctx: (shutil.rmtree(ctx.tmp / "run/checkpoints"), _write(ctx, "run/checkpoints", "x"))),
         words("checkpoints is not a folder")),
    Case("resume-state-truncated", _run_args(_raw_bytes(STATE, lambda b: b[: len(b) // 3])),
         words("training_state.safetensors", "truncated or corrupted", "move step-000010")),
    Case("resume-state-empty", _run_args(_raw_bytes(STATE, lambda b: b"")), words("training_state.safetensors", "truncated or corrupted")),
    Case("resume-state-lying-header-length", _run_args(_raw_bytes(STATE, _header_length)),
         words("training_state.safetensors", "truncated or corrupted")),
    Case("resume-state-without-step", _run_args(_drop_tensor("step")), words("step-000010 is inconsistent", "lacks 'step'")),
    Case("resume-state-step-disagrees-with-name", _run_args(_set_tensor("step", lambda t: _torch().tensor(999))),
         words("holds step 999", "named step-000010")),
    Case("resume-state-metadata-not-json", _run_args(_edit_state(lambda t, m: m.__setitem__("tinydiff", "{oops"))),
         words("step-000010 is inconsistent")),
    Case("resume-state-param-groups-lying", _run_args(_edit_state(lambda t, m: m.__setitem__("tinydiff", json.dumps({"format": 1, "device_type": "cpu", "param_groups": []})))),
         words("step-000010 is inconsistent", "parameter groups")),
    Case("resume-state-optimizer-of-a-parameter-that-is-not-there", _run_args(_set_tensor("optim/999/exp_avg", lambda t: _torch().zeros(1))),
         words("step-000010 is inconsistent", "parameter 999")),
    Case("resume-state-rng-garbage", _run_args(_set_tensor("rng/torch", lambda t: _torch().zeros(3, dtype=_torch().uint8))),
         words("step-000010 is inconsistent")),
    Case("resume-state-data-order-repeated", _run_args(_set_tensor("data/order", lambda t: _torch().zeros_like(t["data/order"]))),
         words("step-000010 is inconsistent", "repeated indices")),
    Case("resume-state-data-position-beyond", _run_args(_set_tensor("data/counters", lambda t: _torch().tensor([0, 10**9]))),
         words("step-000010 is inconsistent", "position 1000000000")),
    Case("resume-checkpoint-of-another-model", _run_args(_raw_bytes("run/checkpoints/step-000010/config.json",
                                                                    lambda b: b.replace(b'"base_channels": 16', b'"base_channels": 32'))),
         words("step-000010 is inconsistent", "model.base_channels = 32", "move step-000010")),
    Case("resume-run-dir-read-only", _run_args(_read_only_run_dir), words("cannot write in the run directory run", "Permission denied")),
    Case("resume-lock-file-a-symlink", _run_args(_lock_symlink), words("cannot write in the run directory")),
    Case("resume-conflicting-preset", _run_args(None, "--preset", "stage1"),
         words("--preset stage1 sets preset = 'stage1'", "has preset = 'stage3'")),
    Case("resume-conflicting-batch-size", _run_args(None, "--batch-size", "32"),
         words("--batch-size sets train.batch_size = 32", "has train.batch_size = 16")),
    Case("resume-conflicting-config-file", lambda ctx: _run_args(None, "--config", str(_write(ctx, "c.toml", "[model]\nbase_channels = 32\n")))(ctx),
         words("sets model.base_channels = 32", "has model.base_channels = 16")),
]

CASES = [
    # train: names
    Case("unknown-schedule", fixed(["train", "--schedule", "cosin", "--steps", "1", "--device", "cpu"]),
         words("--schedule", "unknown schedule 'cosin'", "did you mean 'cosine'"), code=2),
    Case("unknown-preset", fixed(["train", "--preset", "stage9"]), words("--preset", "'stage9'", "stage1", "stage3"), code=2),
    # train: numbers
    Case("steps-zero", fixed(["train", "--steps", "0"]), words("train.steps", "greater than 0", "got 0")),
    Case("steps-negative", fixed(["train", "--steps", "-5"]), words("train.steps", "got -5")),
    Case("batch-size-zero", fixed(["train", "--batch-size", "0"]), words("train.batch_size", "got 0")),
    Case("batch-size-negative", fixed(["train", "--batch-size", "-1"]), words("train.batch_size", "got -1")),
    Case("lr-zero", fixed(["train", "--lr", "0"]), words("train.lr", "greater than 0")),
    Case("lr-negative", fixed(["train", "--lr", "-0.001"]), words("train.lr", "-0.001")),
    Case("device-bogus", fixed(["train", "--device", "bogus"]), words("--device", "'bogus'", "'cpu'"), code=2),
    # train: data
    Case("data-dir-missing", lambda ctx: ["train", "--preset", "stage1", "--data-dir", str(ctx.tmp / "nope"), "--device", "cpu"],
         lambda ctx: [str(ctx.tmp / "nope"), "does not exist"]),
    Case("data-dir-is-file", _data_dir_is_file, lambda ctx: [str(ctx.tmp / "data.txt"), "is a file"]),
    Case("data-dir-without-mnist-offline", _data_dir_without_mnist,
         lambda ctx: ["could not be downloaded", *MNIST_FILES, str(ctx.tmp / "data" / "MNIST" / "raw")]),
    Case("data-dir-corrupt-deflate", _data_dir_with_corrupt_labels, lambda ctx: [MNIST_FILES[1]]),
    Case("data-dir-crc-mismatch", _data_dir_with_crc_mismatch, lambda ctx: [MNIST_FILES[1], "cannot read"]),
    # train: --config
    Case("config-missing", lambda ctx: ["train", "--config", str(ctx.tmp / "nope.toml")],
         lambda ctx: ["nope.toml", "does not exist"]),
    Case("config-invalid-toml", _config_args("[train\nsteps = 3\n"), words("bad.toml", "not valid TOML")),
    Case("config-unknown-key", _config_args("[train]\nstepz = 3\n"), words("train.stepz", "unknown key")),
    Case("config-unknown-table", _config_args("[trian]\nsteps = 3\n"), words("trian", "unknown key")),
    Case("config-wrong-type", _config_args('[train]\nsteps = "many"\n'), words("train.steps", "'many'")),
    # train: --resume
    Case("resume-without-run-dir", fixed(["train", "--resume"]), words("--resume", "--run-dir")),
    Case("resume-empty-dir", _resume_empty, lambda ctx: [str(ctx.tmp / "run"), "not a run directory"]),
    # sample: --model
    Case("sample-model-nonexistent", lambda ctx: ["sample", "--model", str(ctx.tmp / "nope"), "--no-preview"],
         lambda ctx: [repr(str(ctx.tmp / "nope"))]),
    Case("sample-model-neither", _neither, words("neither a model folder", "nor a run directory")),
    Case("sample-model-is-file", _model_is_file, words("model.safetensors", "is a file")),
    Case("sample-model-truncated-weights", _model_args(_truncate_weights), words("model.safetensors", "truncated or corrupted")),
    Case("sample-model-corrupt-config", _model_args(_corrupt_config), words("config.json", "not valid JSON")),
    Case("sample-model-unknown-config-key", _model_args(_unknown_config_key), words("config.json", "model.colour", "unknown key")),
    # sample: other options
    Case("sample-out-jpg", fixed(["sample", "--out", "x.jpg", "--no-preview"]), words("x.jpg", "unsupported extension", ".png")),
    Case("sample-out-missing-dir", fixed(["sample", "--out", "missing_dir/x.png", "--no-preview"]),
         words("missing_dir", "does not exist")),
    Case("sample-unknown-sampler", lambda ctx: ["sample", "--model", str(ctx.model), "--sampler", "nope", "--no-preview"],
         words("--sampler", "unknown sampler 'nope'", "ddpm"), code=2),
    Case("sample-num-zero", fixed(["sample", "--num", "0", "--no-preview"]), words("--num", "1"), code=2),
    Case("sample-gif-not-gif", fixed(["sample", "--gif", "x.mp4", "--no-preview"]), words("--gif", "x.mp4", ".gif file")),
    Case("sample-gif-missing-dir", fixed(["sample", "--gif", "missing_dir/x.gif", "--no-preview"]),
         words("--gif", "missing_dir", "does not exist")),
    Case("sample-gif-too-large", fixed(["sample", "--num", "256", "--gif", "x.gif", "--no-preview"]),
         words("256 images", "megapixels", "--scale", "--num")),
    Case("sample-grid-too-large", fixed(["sample", "--num", "4096", "--scale", "16", "--no-preview"]),
         words("--scale 16", "30752 x 30752", "lower --scale or --num")),
    Case("sample-scale-zero", fixed(["sample", "--scale", "0", "--no-preview"]), words("--scale", "1"), code=2),
    Case("sample-guidance-interval-bogus", fixed(["sample", "a 7", "--guidance-interval", "5,1", "--no-preview"]),
         words("--guidance-interval", "LO < HI", "'5,1'")),
    # sample: whole numbers
    Case("sample-digits-named-separately", fixed(["sample", "a three and a seven", "--no-preview"]),
         words("names 3 and 7 separately", "did you mean 'the number 37'?")),
    Case("sample-number-too-long", fixed(["sample", "the number 123456789", "--no-preview"]),
         words("9 digits", "at most 8 digits")),
    Case("sample-number-words-too-large", fixed(["sample", "twelve thousand", "--no-preview"]),
         words("up to 9,999", "'the number 12000'")),
    Case("sample-prompts-file-digits-separately", lambda ctx: ["sample", "--prompts-file", str(_write(ctx, "p.txt", "42\n3 and 7\n")),
         "--no-preview"], words("names 3 and 7 separately", "'the number 37'")),
    Case("eval-numbers-bad-lengths", fixed(["eval", "--numbers", "--lengths", "2,9"]), words("--lengths '2,9'", "from 2 to 8")),
    Case("eval-numbers-and-style", fixed(["eval", "--numbers", "--style"]), words("--style and --numbers")),
    Case("eval-numbers-unconditional", lambda ctx: ["eval", "--model", str(ctx.model), "--numbers"], words("--numbers needs a text model")),
    # train: trackers
    Case("train-unknown-tracker", fixed(["train", "--preset", "stage1", "--tracker", "tensorbord", "--steps", "1", "--device", "cpu"]),
         words("unknown tracker 'tensorbord'", "did you mean 'tensorboard'")),
    Case("train-tensorboard-not-installed", _tensorboard_missing, words("tensorboard", 'pip install "tinydiff[tensorboard]"')),
    # sweep: every variant is checked before the first one trains
    Case("sweep-typo-in-third-variant", _sweep_args(SWEEP), words("variant 'c'", "train.lrr", "unknown key")),
    Case("sweep-unknown-schedule", _sweep_args(SWEEP.replace('"cosine"', '"cosin"')), words("variant 'b'", "unknown schedule 'cosin'")),
    Case("sweep-no-budget", _sweep_args(SWEEP.replace("steps = 5\n", "")), words("no budget", "steps = N")),
    Case("sweep-unknown-key", _sweep_args("stepz = 5\n" + SWEEP), words("sweep.toml", "stepz", "unknown key")),
    Case("sweep-file-missing", fixed(["sweep", "nope.toml"]), words("nope.toml", "does not exist")),
    Case("sweep-out-not-a-sweep", lambda ctx: _sweep_args(SWEEP.replace("lrr", "lr"), "--out", str(_write(ctx, "notes.txt", "x").parent))(ctx),
         words("not a sweep folder")),
    # compare
    Case("compare-nonexistent", fixed(["compare", "nope"]), words("'nope' does not exist")),
    Case("compare-no-runs", lambda ctx: ["compare", str(ctx.copy_model().parent)], words("holds no run directory")),
    Case("compare-out-not-html", lambda ctx: ["compare", str(ctx.model), "--out", "report.txt"], words("report.txt", ".html")),
    # inspect
    Case("inspect-nonexistent", lambda ctx: ["inspect", str(ctx.tmp / "nope")], lambda ctx: [repr(str(ctx.tmp / "nope"))]),
    Case("inspect-corrupt-config", lambda ctx: ["inspect", str(_with(ctx, _corrupt_config))], words("config.json", "not valid JSON")),
    # usage errors: exit 2, still one line
    Case("usage-unknown-option", fixed(["train", "--stepz", "3"]), words("--stepz", "tinydiff train --help"), code=2),
    Case("usage-not-a-number", fixed(["sample", "--num", "many"]), words("--num", "integer"), code=2),
    Case("usage-unknown-command", fixed(["trian"]), words("trian"), code=2),
    *RUN_CASES,
]


def _with(ctx: Ctx, damage: Callable[[Path], None]) -> Path:
    folder = ctx.copy_model()
    damage(folder)
    return folder


# -- hostile and broken inputs: files someone sent, absurd numbers, a full disk ----------------


def _edit_config(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        cfg = folder / "config.json"
        raw = json.loads(cfg.read_text(encoding="utf-8"))
        change(raw)
        cfg.write_text(json.dumps(raw), encoding="utf-8")

    return damage


def _set(path: str, value: object) -> Callable[[dict], None]:
    def change(raw: dict) -> None:
        *parents, key = path.split(".")
        for p in parents:
            raw = raw[p]
        raw[key] = value

    return change


def _edit_weights(change: Callable[[dict], None]) -> Callable[[Path], None]:
    """Rewrite model.safetensors after ``change`` edits its tensors (a dict of name -> tensor)."""

    def damage(folder: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(folder / "model.safetensors"))
        change(tensors)
        save_file(tensors, str(folder / "model.safetensors"))

    return damage


def _all_nan(tensors: dict) -> None:
    for t in tensors.values():
        t.fill_(float("nan"))


def _one_inf(tensors: dict) -> None:
    next(iter(tensors.values())).view(-1)[0] = float("inf")


def _first_as_int(tensors: dict) -> None:
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].to(__import__("torch").int64)


def _drop_first(tensors: dict) -> None:
    del tensors[sorted(tensors)[0]]


def _add_extra(tensors: dict) -> None:
    tensors["backdoor.weight"] = next(iter(tensors.values())).clone()


def _header(edit: Callable[[bytes, bytes], bytes]) -> Callable[[Path], None]:
    """Replace model.safetensors with ``edit(header_json, data)``: raw bytes, as someone crafting a file would."""

    def damage(folder: Path) -> None:
        import struct

        raw = (folder / "model.safetensors").read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        (folder / "model.safetensors").write_bytes(edit(raw[8 : 8 + n], raw[8 + n :]))

    return damage


def _with_header(header: bytes, data: bytes) -> bytes:
    import struct

    return struct.pack("<Q", len(header)) + header + data


def _lying_shape(header: bytes, data: bytes) -> bytes:
    h = json.loads(header)
    name = next(k for k in h if k != "__metadata__")
    h[name]["shape"] = [1 << 20, 1 << 20]  # a terabyte of float32 in a file of kilobytes
    return _with_header(json.dumps(h).encode(), data)


def _offsets_past_end(header: bytes, data: bytes) -> bytes:
    h = json.loads(header)
    name = next(k for k in h if k != "__metadata__")
    begin, end = h[name]["data_offsets"]
    h[name]["data_offsets"] = [begin + 10**9, end + 10**9]
    return _with_header(json.dumps(h).encode(), data)


def _unknown_dtype(header: bytes, data: bytes) -> bytes:
    h = json.loads(header)
    name = next(k for k in h if k != "__metadata__")
    h[name]["dtype"] = "F128"
    return _with_header(json.dumps(h).encode(), data)


def _link_out(name: str, target: Callable[[Path], Path]) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        folder = ctx.copy_model()
        outside = target(ctx.tmp)
        (folder / name).unlink()
        (folder / name).symlink_to(outside)
        return ["sample", "--model", str(folder), "--num", "1", "--no-preview"]

    return setup


def _outside_copy(name: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        secret = tmp / "elsewhere" / name
        secret.parent.mkdir()
        secret.write_bytes(((tmp / "model" / name).resolve()).read_bytes())
        return secret

    return make


def _write_text(name: str, text: str | bytes) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())

    return damage


def _text_model_args(damage: Callable[[Path], None]) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        folder = ctx.copy_text_model()
        damage(folder)
        return ["sample", "a seven", "--model", str(folder), "--num", "1", "--no-preview"]

    return setup


def _reorder_vocab(folder: Path) -> None:
    vocab = json.loads((folder / "vocab.json").read_text())
    specials, words = vocab["tokens"][:3], vocab["tokens"][3:]
    vocab["tokens"] = specials + words[::-1]  # the same words, in another order: "seven" would read as "a"
    (folder / "vocab.json").write_text(json.dumps(vocab))


def _prompts_args(make: Callable[[Ctx], str]) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["sample", "--prompts-file", make(ctx), "--num", "1", "--no-preview"]


def _stdin(data: bytes) -> Callable[[Ctx], list[str]]:
    import io
    import sys

    def setup(ctx: Ctx) -> list[str]:
        ctx.monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        return ["sample", "--prompts-file", "-", "--num", "1", "--no-preview"]

    return setup


def _run_with(record: object = None, metrics: bytes | None = None, raw_record: bytes | None = None) -> Callable[[Ctx], list[str]]:
    """A run directory holding a sound checkpoint, with the given config.json and metrics.jsonl."""

    def setup(ctx: Ctx) -> list[str]:
        run = ctx.tmp / "run"
        (run / "checkpoints").mkdir(parents=True)
        shutil.copytree(ctx.model, run / "checkpoints" / "step-000010")
        data = raw_record if raw_record is not None else json.dumps(record).encode()
        (run / "config.json").write_bytes(data)
        if metrics is not None:
            (run / "metrics.jsonl").write_bytes(metrics)
        return ["inspect", str(run)]

    return setup


GOOD_RECORD = {"config": {"preset": "stage3", "train": {"steps": 10}}, "command": ["tinydiff", "train"]}
LINE = b'{"step": 5, "loss": 0.5}\n'


def _full_disk(ctx: Ctx, *, after: int = 1) -> None:
    """Every write after the first ``after`` files fails with ENOSPC, as on a full disk."""
    import builtins
    import errno
    import os as _os

    count = {"n": 0}
    real_open, real_fdopen = builtins.open, _os.fdopen

    class Full:
        def __init__(self, f: object) -> None:
            self.f = f

        def write(self, data: bytes) -> int:
            count["n"] += 1
            if count["n"] > after:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)  # type: ignore[attr-defined]

        def __getattr__(self, name: str) -> object:
            return getattr(self.f, name)

        def __enter__(self) -> "Full":
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()  # type: ignore[attr-defined]

    ctx.monkeypatch.setattr("tinydiff.files.open", lambda *a, **k: Full(real_open(*a, **k)), raising=False)
    ctx.monkeypatch.setattr(_os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))


def _out_on_full_disk(out: str, *, make_dir: bool = False, after: int = 1) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        if make_dir:
            (ctx.tmp / out.rstrip("/")).mkdir()
        _full_disk(ctx, after=after)
        return ["sample", "--model", str(ctx.model), "--num", "3", "--steps", "1", "--seed", "0", "--out", out, "--no-preview"]

    return setup


def _read_only(out: str, *, make_dir: bool = False) -> Callable[[Ctx], list[str]]:
    """A folder that refuses new files (as a read-only mount would, even to root)."""
    import errno
    import tempfile

    def setup(ctx: Ctx) -> list[str]:
        if make_dir:
            (ctx.tmp / out.rstrip("/")).mkdir()

        def refuse(*args: object, dir: object = None, **kwargs: object) -> object:
            raise PermissionError(errno.EROFS, "Read-only file system", str(dir))

        ctx.monkeypatch.setattr(tempfile, "mkstemp", refuse)
        ctx.monkeypatch.setattr(tempfile, "mkdtemp", refuse)
        return ["sample", "--model", str(ctx.model), "--num", "2", "--steps", "1", "--seed", "0", "--out", out, "--no-preview"]

    return setup


def _big_file(ctx: Ctx, name: str, size: int) -> str:
    path = ctx.tmp / name
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: no disk used
    return str(path)


def _deep(n: int) -> str:
    return "[" * n + "]" * n


HOSTILE = [
    # numbers that are not numbers
    Case("sample-guidance-nan", fixed(["sample", "a 7", "--guidance", "nan", "--no-preview"]), words("--guidance", "'nan'", "finite"), code=2),
    Case("sample-guidance-inf", fixed(["sample", "a 7", "--guidance", "inf", "--no-preview"]), words("--guidance", "'inf'", "finite"), code=2),
    Case("sample-guidance-minus-inf", fixed(["sample", "a 7", "--guidance", "-inf", "--no-preview"]), words("--guidance", "finite"), code=2),
    Case("eval-guidance-nan", fixed(["eval", "--guidance", "NaN"]), words("--guidance", "finite"), code=2),
    Case("train-max-minutes-nan", fixed(["train", "--max-minutes", "nan"]), words("--max-minutes", "finite"), code=2),
    # choices: a wrong value is a usage error naming the choices
    Case("sample-device-gpu", fixed(["sample", "--device", "gpu", "--no-preview"]), words("--device", "'gpu'", "'cuda'"), code=2),
    Case("eval-device-bogus", fixed(["eval", "--device", "tpu"]), words("--device", "'tpu'"), code=2),
    Case("train-conditioning-bogus", fixed(["train", "--conditioning", "class"]), words("--conditioning", "'class'", "'text'"), code=2),
    Case("eval-unknown-sampler", fixed(["eval", "--sampler", "ddmp"]), words("--sampler", "unknown sampler 'ddmp'", "did you mean"), code=2),
    # eval: sizes
    Case("eval-num-per-digit-huge", fixed(["eval", "--num-per-digit", "1000000000"]), words("--num-per-digit", "1000"), code=2),
    Case("eval-num-per-digit-one", fixed(["eval", "--num-per-digit", "1"]), words("--num-per-digit", "2"), code=2),
    # --prompts-file: a regular file (or -) of bounded size
    Case("prompts-file-dev-zero", _prompts_args(lambda ctx: "/dev/zero"), words("/dev/zero", "not a regular file")),
    Case("prompts-file-dev-urandom", _prompts_args(lambda ctx: "/dev/urandom"), words("/dev/urandom", "not a regular file")),
    Case("prompts-file-directory", _prompts_args(lambda ctx: str(ctx.tmp)), words("--prompts-file", "not a regular file")),
    Case("prompts-file-huge", _prompts_args(lambda ctx: _big_file(ctx, "huge.txt", 64 << 20)), words("huge.txt", "more than 1 MB")),
    Case("prompts-file-nul-bytes", _prompts_args(lambda ctx: _big_file(ctx, "nul.txt", 1000)), words("nul.txt", "NUL")),
    Case("prompts-file-latin1", _prompts_args(lambda ctx: str(_write_bytes(ctx, "latin.txt", "un sept \xe9crit\n".encode("latin-1")))),
         words("latin.txt", "not UTF-8")),
    Case("prompts-file-stdin-huge", _stdin(b"a seven\n" * 200_000), words("standard input", "more than 1 MB")),
    Case("prompts-file-stdin-empty", _stdin(b""), words("standard input", "holds no prompt")),
    Case("prompts-file-stdin-binary", _stdin(bytes(range(128, 256))), words("standard input", "not UTF-8")),
    # inspect: a run directory whose files are not what TinyDiff writes
    Case("inspect-run-config-list", _run_with([1, 2, 3]), words("config.json", "JSON object", "list")),
    Case("inspect-run-train-number", _run_with({"config": {"train": 7}}), words("config.train", "JSON object", "int")),
    Case("inspect-run-config-string", _run_with({"config": "stage3"}), words("'config'", "JSON object")),
    Case("inspect-run-config-not-json", _run_with(raw_record=b"{'preset': stage3"), words("config.json", "not valid JSON")),
    Case("inspect-run-config-deep", _run_with(raw_record=_deep(100_000).encode()), words("config.json", "deeper than 64")),
    Case("inspect-metrics-non-object", _run_with(GOOD_RECORD, LINE + b"[1, 2]\n" + LINE), words("metrics.jsonl", "line 2", "list")),
    Case("inspect-metrics-not-utf8", _run_with(GOOD_RECORD, LINE + b'{"step": 6, "loss": "\xff\xfe"}\n' + LINE),
         words("metrics.jsonl", "line 2", "UTF-8")),
    Case("inspect-metrics-eval-lacks-key", _run_with(GOOD_RECORD, LINE + b'{"step": 5, "eval_mnist_fd": 3.0}\n'),
         words("metrics.jsonl", "line 2", "eval_fd_ratio")),
    Case("inspect-metrics-eval-fd-string", _run_with(GOOD_RECORD, b'{"step": 5, "eval_mnist_fd": "low", "eval_fd_ratio": 1}\n' + LINE),
         words("metrics.jsonl", "line 1")),
    Case("inspect-model-lying-header", lambda ctx: ["inspect", str(_with(ctx, _header(_lying_shape)))], words("model.safetensors", "does not fit")),
    Case("inspect-model-weights-link-out", lambda ctx: ["inspect", _link_out("model.safetensors", _outside_copy("model.safetensors"))(ctx)[2]],
         words("model.safetensors", "symbolic link", "outside")),
    # sample --model: config.json asks for absurd sizes (refused before anything is allocated)
    Case("sample-model-billion-channels", _model_args(_edit_config(_set("model.base_channels", 10**9))),
         words("config.json", "model.base_channels", "2000000000", "65536")),
    Case("sample-model-billion-timesteps", _model_args(_edit_config(_set("schedule.num_timesteps", 10**9))),
         words("config.json", "schedule.num_timesteps")),
    Case("sample-model-huge-image", _model_args(_edit_config(_set("model.image_size", 1 << 20))), words("model.image_size", "1048576")),
    Case("sample-model-odd-image", _model_args(_edit_config(_set("model.image_size", 27))), words("model.image_size=27", "halved")),
    Case("sample-model-thousand-levels", _model_args(_edit_config(_set("model.channel_mult", [1] * 1000))), words("channel_mult", "1000")),
    Case("sample-model-million-res-blocks", _model_args(_edit_config(_set("model.num_res_blocks", 10**6))), words("model.num_res_blocks")),
    Case("sample-model-wider-than-weights", _model_args(_edit_config(_set("model.base_channels", 16))), words("model.safetensors", "shape")),
    Case("sample-model-format-99", _model_args(_edit_config(_set("format", 99))), words("config.json", "format")),
    Case("sample-model-config-list", _model_args(_write_text("config.json", "[1, 2]")), words("config.json", "JSON object", "list")),
    Case("sample-model-config-deep", _model_args(_write_text("config.json", _deep(100_000))), words("config.json", "deeper than 64")),
    Case("sample-model-config-huge", _model_args(lambda f: _sparse(f / "config.json", 32 << 20)), words("config.json", "34 MB", "16 MB")),
    Case("sample-model-config-not-utf8", _model_args(_write_text("config.json", b'{"format": "\xff"}')), words("config.json", "not valid JSON")),
    # sample --model: weights that are not what the config says
    Case("sample-model-nan-weights", _model_args(_edit_weights(_all_nan)), words("model.safetensors", "NaN or infinite")),
    Case("sample-model-one-inf-weight", _model_args(_edit_weights(_one_inf)), words("model.safetensors", "NaN or infinite")),
    Case("sample-model-int-weights", _model_args(_edit_weights(_first_as_int)), words("model.safetensors", "dtype I64")),
    Case("sample-model-missing-tensor", _model_args(_edit_weights(_drop_first)), words("model.safetensors", "lacks tensor")),
    Case("sample-model-extra-tensor", _model_args(_edit_weights(_add_extra)), words("model.safetensors", "unexpected tensor 'backdoor.weight'")),
    Case("sample-model-empty-weights", _model_args(_write_text("model.safetensors", b"")), words("model.safetensors", "shorter than a header")),
    Case("sample-model-header-length-huge", _model_args(_header(lambda h, d: b"\xff" * 8 + h + d)), words("model.safetensors", "header claims")),
    Case("sample-model-header-past-end", _model_args(_header(lambda h, d: _with_header(h, d[: len(d) // 2]))), words("model.safetensors", "does not fit")),
    Case("sample-model-header-lying-shape", _model_args(_header(_lying_shape)), words("model.safetensors", "does not fit")),
    Case("sample-model-header-offsets-past-end", _model_args(_header(_offsets_past_end)), words("model.safetensors", "does not fit")),
    Case("sample-model-header-unknown-dtype", _model_args(_header(_unknown_dtype)), words("model.safetensors", "'F128'")),
    Case("sample-model-header-not-json", _model_args(_header(lambda h, d: _with_header(b"{" * len(h), d))), words("model.safetensors", "nests too deep")),
    Case("sample-model-header-a-list", _model_args(_header(lambda h, d: _with_header(b"[]", d))), words("model.safetensors", "not a JSON object")),
    Case("sample-model-header-bad-entry", _model_args(_header(lambda h, d: _with_header(b'{"x": 1}', d))), words("model.safetensors", "tensor 'x'")),
    # sample --model: links out of the folder
    Case("sample-model-weights-link-out", _link_out("model.safetensors", _outside_copy("model.safetensors")),
         words("model.safetensors", "symbolic link", "outside")),
    Case("sample-model-config-link-out", _link_out("config.json", _outside_copy("config.json")), words("config.json", "symbolic link", "outside")),
    Case("sample-model-config-link-to-dev-zero", _link_out("config.json", lambda tmp: Path("/dev/zero")), words("config.json", "/dev/zero", "outside")),
    Case("sample-model-config-link-to-etc-passwd", _link_out("config.json", lambda tmp: Path("/etc/passwd")), words("config.json", "/etc/passwd")),
    # text models: the vocabulary
    Case("sample-vocab-reordered", _text_model_args(_reorder_vocab), words("vocab.json", "not the vocabulary this model was trained with")),
    Case("sample-vocab-missing", _text_model_args(lambda f: (f / "vocab.json").unlink()), words("vocab.json", "missing")),
    Case("sample-vocab-deep", _text_model_args(_write_text("vocab.json", _deep(100_000))), words("vocab.json", "deeper than 64")),
    Case("sample-vocab-list", _text_model_args(_write_text("vocab.json", '["<pad>"]')), words("vocab.json", "JSON object")),
    Case("sample-vocab-link-out", lambda ctx: _text_model_args(lambda f: ((f / "vocab.json").unlink(), (f / "vocab.json").symlink_to("/etc/hostname")))(ctx),
         words("vocab.json", "symbolic link")),
    Case("sample-text-settings-huge", _text_model_args(_edit_config(_set("model.text.layers", 10**6))), words("model.text.layers")),
    # --out on a full disk or a read-only folder: nothing partial remains
    Case("sample-out-new-dir-full-disk", _out_on_full_disk("pngs/"), words("No space left on device")),
    Case("sample-out-existing-dir-full-disk", _out_on_full_disk("pngs/", make_dir=True), words("No space left on device")),
    Case("sample-out-grid-full-disk", _out_on_full_disk("grid.png", after=0), words("No space left on device")),
    Case("sample-out-npz-full-disk", _out_on_full_disk("x.npz", after=0), words("No space left on device")),
    Case("sample-out-read-only-dir", _read_only("pngs/", make_dir=True), words("Read-only file system")),
    Case("sample-out-read-only-grid", _read_only("grid.png"), words("Read-only file system")),
    # a failed download leaves the data folder as it was: the user's MNIST/ stays, the raw/ it made goes
    Case("data-dir-with-mnist-folder-offline", lambda ctx: ((ctx.tmp / "data" / "MNIST").mkdir(parents=True), _data_dir_without_mnist(ctx))[1],
         words("could not be downloaded")),
]


def _write_bytes(ctx: Ctx, name: str, data: bytes) -> Path:
    path = ctx.tmp / name
    path.write_bytes(data)
    return path


def _sparse(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


CASES += HOSTILE


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_error_line(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], model_folder: Path,
    request: pytest.FixtureRequest,
    text_model_folder: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TINYDIFF_DEBUG", raising=False)
    run = request.getfixturevalue("trained_run") if case.id.startswith("resume-") and case in RUN_CASES else None
    ctx = Ctx(tmp_path, model_folder, monkeypatch, run, text_model_folder)
    args = case.setup(ctx)
    before = tree(tmp_path)
    model_before = {p: (model_folder / p).read_bytes() for p in ("config.json", "model.safetensors")}
    run_before = {p: p.read_bytes() for p in tmp_path.glob("run/**/*") if p.is_file() and p.stat().st_size < 2**20}

    code, out, err = run_cli(args, capsys)

    assert_one_error_line(code, out, err, case.code, case.needles(ctx))
    assert tree(tmp_path) == before, "files or folders were created or deleted"
    assert {p: (model_folder / p).read_bytes() for p in model_before} == model_before
    assert {p: p.read_bytes() for p in run_before} == run_before, "a run directory's files were changed"
    if case.id in ("data-dir-without-mnist-offline", "data-dir-with-mnist-folder-offline"):
        assert ctx.calls, "the download was never attempted"  # type: ignore[attr-defined]
        assert all(".invalid/mnist/" in url for url in ctx.calls)  # type: ignore[attr-defined]


STRICT = [c for c in CASES if c.id in ("unknown-preset", "unknown-schedule", "data-dir-missing", "data-dir-is-file", "sample-unknown-sampler",
                                        "eval-num-per-digit-huge", "inspect-metrics-not-utf8", "sample-model-nan-weights")]


@pytest.mark.parametrize("case", STRICT, ids=[c.id for c in STRICT])
def test_error_output_is_only_the_error_line(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], model_folder: Path,
    text_model_folder: Path,
) -> None:
    """stderr holds the error line and nothing else: no blank line before it (e.g. from a progress bar)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TINYDIFF_DEBUG", raising=False)
    code, out, err = run_cli(case.setup(Ctx(tmp_path, model_folder, monkeypatch, text_model=text_model_folder)), capsys)
    assert code == case.code
    assert err.startswith("error:"), f"stderr must start with the error line, got {err!r}"
    assert err.endswith("\n") and err.count("\n") == 1, f"stderr must be exactly one line, got {err!r}"


def test_wrong_tensor_shape_names_tensor_and_both_shapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Weights of a base_channels=16 UNet under a config saying 8: the error names the tensor and both shapes."""
    from tinydiff.checkpoint import ModelFolderConfig, save_model_folder
    from tinydiff.config import ModelConfig, ScheduleConfig
    from tinydiff.nn.unet import UNet

    monkeypatch.chdir(tmp_path)
    small, big = ModelConfig(**TINY), ModelConfig(**{**TINY, "base_channels": 16})
    big_weights = UNet(big).state_dict()
    small_weights = UNet(small).state_dict()
    folder = tmp_path / "wrong"
    save_model_folder(folder, ModelFolderConfig(model=small, schedule=ScheduleConfig(num_timesteps=50)), big_weights)
    before = tree(tmp_path)

    code, out, err = run_cli(["sample", "--model", str(folder), "--num", "1", "--no-preview"], capsys)

    line = assert_one_error_line(code, out, err, 1, ["model.safetensors"])
    m = re.search(r"tensor '([^']+)'", line)
    assert m, line
    name = m.group(1)
    assert name in small_weights and name in big_weights
    got, expected = tuple(big_weights[name].shape), tuple(small_weights[name].shape)
    assert got != expected
    assert str(got) in line and str(expected) in line, line
    assert line.index(str(got)) < line.index(str(expected)), "found shape first, expected shape second"
    assert tree(tmp_path) == before


def test_missing_weights_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], model_folder: Path
) -> None:
    """A folder with config.json but no model.safetensors is not a model folder: say so, in one line."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "half"
    folder.mkdir()
    shutil.copy(model_folder / "config.json", folder / "config.json")
    before = tree(tmp_path)
    code, out, err = run_cli(["sample", "--model", str(folder), "--no-preview"], capsys)
    assert_one_error_line(code, out, err, 1, ["neither a model folder"])
    assert tree(tmp_path) == before


def test_debug_env_shows_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """TINYDIFF_DEBUG=1 lets the real exception through instead of the one line."""
    from tinydiff.errors import TinyDiffError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TINYDIFF_DEBUG", "1")
    with pytest.raises(TinyDiffError, match="nope.toml"):
        main(["train", "--config", "nope.toml"])
    assert list(tmp_path.iterdir()) == []


def test_good_model_folder_is_accepted_by_inspect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], model_folder: Path
) -> None:
    """Control for the damaged-folder cases: the undamaged folder inspects cleanly (exit 0, JSON on stdout)."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["inspect", str(model_folder), "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["model"]["base_channels"] == 8
    assert info["schedule"]["num_timesteps"] == 50
    assert info["parameters"] > 0
    assert list(tmp_path.iterdir()) == []
