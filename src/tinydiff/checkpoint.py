"""Model folders and training state, saved with safetensors and written atomically.

A model folder is ``config.json`` (validated before any tensor is built) plus
``model.safetensors`` (the EMA weights). A run's checkpoint is a model folder
with a ``training_state.safetensors`` beside it: raw weights, optimizer, step
and every RNG state, enough to resume exactly. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import __version__
from .config import DiffusionConfig, ModelConfig, ScheduleConfig, format_validation_error
from .errors import TinyDiffError
from .images import current_umask

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "training_state.safetensors"
VOCAB_FILE = "vocab.json"  # the tokenizer's vocabulary, for text models
FORMAT = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


class ModelFolderConfig(BaseModel):
    """``config.json`` of a model folder: everything needed to rebuild the network and its schedule."""

    model_config = ConfigDict(extra="forbid")

    format: int = Field(FORMAT, ge=1, le=FORMAT)
    tinydiff_version: str = __version__
    model: ModelConfig
    schedule: ScheduleConfig
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    training: dict[str, Any] = Field(default_factory=dict)  # step, run, preset: for people, not for loading
    evaluation: dict[str, Any] = Field(default_factory=dict)  # `tinydiff eval` figures, for people (bundled models)


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


# -- writing ------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_folder_atomic(target: Path, files: dict[str, bytes]) -> None:
    """Write files into a temporary sibling folder, fsync them, then rename it to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{target.name}-"))
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; others may read a model folder
        if target.exists():
            old = target.with_name(f".old-{target.name}-{os.getpid()}")
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def model_folder_files(config: ModelFolderConfig, weights: dict[str, Any], tokenizer: Any = None) -> dict[str, bytes]:
    """The bytes of ``config.json``, ``model.safetensors`` and, for text models, ``vocab.json``."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    extra = {VOCAB_FILE: (json.dumps(tokenizer.to_json(), indent=2) + "\n").encode()} if tokenizer is not None else {}
    return extra | {
        CONFIG_FILE: (json.dumps(config.model_dump(mode="json"), indent=2) + "\n").encode(),
        # one metadata key: safetensors writes several in arbitrary order, and files must be byte-reproducible
        WEIGHTS_FILE: save(tensors, metadata={"format": "pt"}),
    }


def save_model_folder(path: str | Path, config: ModelFolderConfig, weights: dict[str, Any], tokenizer: Any = None) -> Path:
    """Save a model folder atomically (replacing one already there)."""
    path = Path(path)
    write_folder_atomic(path, model_folder_files(config, weights, tokenizer))
    return path


# -- reading ------------------------------------------------------------------


def read_model_config(folder: str | Path) -> ModelFolderConfig:
    """Parse and validate ``config.json`` of a model folder."""
    path = Path(folder) / CONFIG_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TinyDiffError(f"{folder} has no {CONFIG_FILE}; it is not a model folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TinyDiffError(f"{path} is not valid JSON ({exc}); the model folder is corrupted") from None
    if not isinstance(raw, dict):
        raise TinyDiffError(f"{path} must hold a JSON object; the model folder is corrupted")
    try:
        return ModelFolderConfig.model_validate(raw)
    except ValidationError as exc:
        raise TinyDiffError(format_validation_error(exc, source=str(path))) from None


def read_safetensors(path: Path) -> dict[str, Any]:
    """All tensors of a safetensors file, with a clear error when it is missing, truncated or corrupted."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise TinyDiffError(f"{path} is missing; the model folder is incomplete")
    try:
        return load_file(str(path))
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TinyDiffError(f"{path} is truncated or corrupted ({reason}); save or download it again") from None


def check_tensors(found: dict[str, Any], expected: dict[str, Any], where: Path) -> None:
    """Compare names, shapes and dtypes with what the network expects; name the first mismatch."""
    for name, ref in expected.items():
        if name not in found:
            raise TinyDiffError(f"{where} lacks tensor {name!r}; it does not match its config.json")
        got = found[name]
        if tuple(got.shape) != tuple(ref.shape):
            raise TinyDiffError(
                f"{where}: tensor {name!r} has shape {tuple(got.shape)}, the config expects {tuple(ref.shape)}"
            )
        if got.dtype.is_floating_point != ref.dtype.is_floating_point:
            raise TinyDiffError(f"{where}: tensor {name!r} has dtype {got.dtype}, expected {ref.dtype}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise TinyDiffError(f"{where} has unexpected tensor {extra[0]!r}; it does not match its config.json")


def load_model_folder(folder: str | Path, *, device: Any = "cpu") -> tuple[ModelFolderConfig, Any]:
    """The validated config and the network with its saved (EMA) weights, in eval mode."""
    from .nn.unet import UNet

    folder = Path(folder)
    config = read_model_config(folder)
    tokenizer = None
    if config.model.text is not None:
        from .nn.text import Tokenizer

        tokenizer = Tokenizer.load(folder / VOCAB_FILE)
    model = UNet(config.model, tokenizer=tokenizer)
    expected = model.state_dict()
    tensors = read_safetensors(folder / WEIGHTS_FILE)
    check_tensors(tensors, expected, folder / WEIGHTS_FILE)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    return config, model.to(device).eval()


# -- finding models -------------------------------------------------------------


def is_model_folder(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first (temporary folders of an interrupted write are ignored)."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        return []
    found = []
    for child in ckpt_dir.iterdir():
        m = _STEP_DIR.match(child.name)
        if m and child.is_dir() and is_model_folder(child):
            found.append((int(m.group(1)), child))
    return sorted(found)


def bundled_models() -> dict[str, Path]:
    """Models shipped inside the package, by name."""
    from importlib import resources

    root = resources.files("tinydiff").joinpath("models")
    if not root.is_dir():
        return {}
    return {p.name: Path(str(p)) for p in root.iterdir() if p.is_dir() and is_model_folder(Path(str(p)))}


DEFAULT_MODEL = "tinydiff-mnist"


def resolve_model_ref(ref: str | None) -> Path:
    """A run directory (its newest checkpoint), a model folder, or a bundled model's name -> a model folder."""
    bundled = bundled_models()
    if ref is None:
        if DEFAULT_MODEL in bundled:
            return bundled[DEFAULT_MODEL]
        raise TinyDiffError(
            "no bundled model is installed; train one with `tinydiff train --run-dir runs/first` "
            "and pass --model runs/first"
        )
    path = Path(ref).expanduser()
    if path.is_dir():
        if is_model_folder(path):
            return path
        if (path / "checkpoints").is_dir():
            checkpoints = list_checkpoints(path)
            if not checkpoints:
                raise TinyDiffError(f"run {ref!r} has no complete checkpoint yet; train it further or pick another run")
            return checkpoints[-1][1]
        raise TinyDiffError(
            f"{ref!r} is neither a model folder (config.json + model.safetensors) nor a run directory (checkpoints/)"
        )
    if path.exists():
        raise TinyDiffError(f"{ref!r} is a file; --model takes a model folder, a run directory or a bundled model name")
    if ref in bundled:
        return bundled[ref]
    names = ", ".join(sorted(bundled)) or "none installed"
    raise TinyDiffError(f"no model folder, run directory or bundled model named {ref!r} (bundled: {names})")
