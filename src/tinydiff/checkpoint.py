"""Model folders and training state: the one place that knows their format.

A model folder is ``config.json`` (validated before any tensor is built), ``model.safetensors``
(the EMA weights) and, for text models, ``vocab.json``. A run's checkpoint is a model folder
with a ``training_state.safetensors`` beside it: raw weights, optimizer state and whatever
else the trainer needs to continue exactly (data order, RNG states, step). Folders are written
whole or not at all (:mod:`tinydiff.files`); nothing is ever unpickled.

Format 2 names the UNet's parts (``downs.0.blocks.1.res``); format 1 folders, whose UNet
was unnamed lists (``down.1.0``), load with their keys renamed.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import __version__
from .config import DiffusionConfig, ModelConfig, ScheduleConfig, format_validation_error
from .errors import TinyDiffError
from .files import json_bytes, parse_step_name, step_name, write_folder_atomic

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "training_state.safetensors"
VOCAB_FILE = "vocab.json"  # the tokenizer's vocabulary, for text models
FORMAT = 2  # 1: the UNet's parts were unnamed lists
STATE_FORMAT = 1

# What a model folder someone sends may ask for, checked before anything is allocated: far above
# any TinyDiff model (the bundled one: config.json 4 KB, a 20 KB weights header, 28x28 images)
MAX_JSON_BYTES = 16 << 20  # config.json, vocab.json
MAX_HEADER_BYTES = 16 << 20  # a safetensors file's JSON header
MAX_JSON_DEPTH = 64  # nesting of a JSON value: deep nesting makes json.loads recurse until it fails
MAX_IMAGE_SIZE = 1024  # pixels a side; a larger x_T would not fit in memory at --num 16
MAX_LEVELS = 8  # UNet resolutions (len(channel_mult))
MAX_BLOCKS = 64  # residual blocks per level, text encoder layers
MAX_WIDTH = 1 << 16  # channels of any layer, text width, tokens in a prompt
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


class ModelFolderConfig(BaseModel):
    """``config.json`` of a model folder: everything needed to rebuild the network and its schedule."""

    model_config = ConfigDict(extra="forbid")

    format: int = Field(FORMAT, ge=1, le=FORMAT)
    tinydiff_version: str = __version__
    # sha256 of vocab.json's token list, in id order: a vocabulary in another order maps words to other embeddings
    vocab_sha256: str | None = None
    model: ModelConfig
    schedule: ScheduleConfig
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    training: dict[str, Any] = Field(default_factory=dict)  # step, run, preset: for people, not for loading
    evaluation: dict[str, Any] = Field(default_factory=dict)  # `tinydiff eval` figures, for people (bundled models)


# -- writing ------------------------------------------------------------------


def _tensors(weights: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().contiguous().cpu() for k, v in weights.items()}


def model_folder_files(config: ModelFolderConfig, weights: dict[str, Any], tokenizer: Any = None) -> dict[str, bytes]:
    """The bytes of ``config.json``, ``model.safetensors`` and, for text models, ``vocab.json``."""
    from safetensors.torch import save

    update: dict[str, Any] = {"format": FORMAT}
    if tokenizer is not None:
        update["vocab_sha256"] = vocabulary_hash(tokenizer.tokens)
    config = config.model_copy(update=update)
    extra = {VOCAB_FILE: json_bytes(tokenizer.to_json())} if tokenizer is not None else {}
    return extra | {
        CONFIG_FILE: json_bytes(config.model_dump(mode="json")),
        # one metadata key: safetensors writes several in arbitrary order, and files must be byte-reproducible
        WEIGHTS_FILE: save(_tensors(weights), metadata={"format": "pt"}),
    }


def save_model_folder(path: str | Path, config: ModelFolderConfig, weights: dict[str, Any], tokenizer: Any = None) -> Path:
    """Save a model folder atomically (replacing one already there)."""
    path = Path(path)
    write_folder_atomic(path, model_folder_files(config, weights, tokenizer))
    return path


def save_checkpoint(
    folder: Path,
    config: ModelFolderConfig,
    *,
    ema: Any,
    model: Any,
    optimizer: Any,
    state: dict[str, Any],
    device_type: str,
) -> None:
    """A resumable checkpoint: the model folder of the EMA weights plus ``training_state.safetensors``.

    The training state holds the raw weights (``model/<name>``), the optimizer's per-parameter
    tensors (``optim/<index>/<name>``) and the trainer's own ``state`` tensors (data order, RNG
    states, step), with the optimizer's hyper-parameters and the device type as JSON metadata.
    """
    from safetensors.torch import save

    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, per_param in opt["state"].items():
        for key, value in per_param.items():
            tensors[f"optim/{index}/{key}"] = value if hasattr(value, "shape") else _as_tensor(value)
    tensors.update(state)
    # one metadata key, so the file is byte-reproducible (safetensors orders several keys arbitrarily)
    meta = {"tinydiff": json.dumps({"format": STATE_FORMAT, "device_type": device_type, "param_groups": opt["param_groups"]})}
    tokenizer = getattr(getattr(model, "text_encoder", None), "tokenizer", None)
    files = model_folder_files(config, ema.state_dict(), tokenizer)
    files[STATE_FILE] = save(_tensors(tensors), metadata=meta)
    write_folder_atomic(folder, files)


def vocabulary_hash(tokens: list[str]) -> str:
    """sha256 of the tokens in id order, one a line: what ``config.json`` records of its ``vocab.json``."""
    return hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()


def _as_tensor(value: Any) -> Any:
    import torch

    return torch.tensor(value)


# -- reading ------------------------------------------------------------------


class InconsistentCheckpoint(TinyDiffError):
    """A checkpoint whose files load but do not fit together or this run (edited, damaged, another run's)."""

    def __init__(self, folder: Path, reason: str) -> None:
        super().__init__(f"cannot resume from {folder}: {reason}; it does not match this config")
        self.folder, self.reason = folder, reason


class DeviceMismatch(TinyDiffError):
    """A checkpoint saved on another device type: its random-number state belongs there."""


def check_own_file(path: Path) -> None:
    """A file of a model folder or run is a regular file inside that folder, not a link out of it or a device."""
    path = Path(path)
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(path.parent.resolve()):
            raise TinyDiffError(
                f"{path} is a symbolic link to {target}, outside its folder; refusing to read it (copy the file in instead)"
            )
    if path.exists() and not path.is_file():
        raise TinyDiffError(f"{path} is not a regular file; the folder is corrupted")


def json_depth_ok(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether no JSON value in ``text`` nests deeper than ``limit`` (brackets inside strings counted too: a bound, not a parse)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    depth = 0
    for byte in data.translate(None, bytes(b for b in range(256) if b not in b"[]{}")):
        depth += 1 if byte in b"[{" else -1
        if depth > limit:
            return False
    return True


def read_json_file(path: Path, *, missing: str, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file someone may have sent: a regular file in its folder, at most ``limit`` bytes, not nested absurdly deep."""
    path = Path(path)
    check_own_file(path)
    try:
        size = path.stat().st_size
        if size > limit:
            raise TinyDiffError(f"{path} is {size / 1e6:.0f} MB, more than the {limit >> 20} MB a TinyDiff JSON file may hold; it is not TinyDiff's")
        data = path.read_bytes()
    except FileNotFoundError:
        raise TinyDiffError(missing) from None
    except OSError as exc:
        raise TinyDiffError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if not json_depth_ok(data):
        raise TinyDiffError(f"{path} nests JSON deeper than {MAX_JSON_DEPTH} levels; the folder is corrupted")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise TinyDiffError(f"{path} is not valid JSON ({exc}); the model folder is corrupted") from None


def read_json_object(path: Path, *, missing: str) -> dict[str, Any]:
    """A model folder's JSON file as a dict; ``missing`` is the message when the file is absent."""
    raw = read_json_file(path, missing=missing)
    if not isinstance(raw, dict):
        raise TinyDiffError(f"{path} must hold a JSON object, not a {type(raw).__name__}; the model folder is corrupted")
    return raw


def read_model_config(folder: str | Path) -> ModelFolderConfig:
    """Parse and validate ``config.json`` of a model folder."""
    path = Path(folder) / CONFIG_FILE
    raw = read_json_object(path, missing=f"{folder} has no {CONFIG_FILE}; it is not a model folder")
    try:
        return ModelFolderConfig.model_validate(raw)
    except ValidationError as exc:
        raise TinyDiffError(format_validation_error(exc, source=str(path))) from None


def safetensors_header(path: Path) -> dict[str, Any]:
    """The header of a safetensors file (name -> dtype, shape, data_offsets), checked against the file's size
    without loading a tensor: a header that lies about sizes or offsets is refused here."""
    path = Path(path)
    check_own_file(path)

    def corrupted(reason: str) -> TinyDiffError:
        return TinyDiffError(f"{path} is truncated or corrupted ({reason}); save or download it again")

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise corrupted(f"{size} bytes, shorter than a header")
            (length,) = struct.unpack("<Q", head)
            if length > MAX_HEADER_BYTES:
                raise corrupted(f"its header claims {length} bytes, more than {MAX_HEADER_BYTES >> 20} MB")
            if 8 + length > size:
                raise corrupted(f"its header claims {length} bytes of a {size}-byte file")
            raw = f.read(length)
    except OSError as exc:
        raise TinyDiffError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if not json_depth_ok(raw):
        raise corrupted("its header nests too deep")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise corrupted("its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise corrupted("its header is not a JSON object")
    data_bytes = size - 8 - length
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise corrupted(f"tensor {name!r} is not described by dtype, shape and data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPE_BYTES:
            raise corrupted(f"tensor {name!r} has dtype {dtype!r}, which TinyDiff does not read")
        ints = [*shape, *offsets] if isinstance(shape, list) and isinstance(offsets, list) else None
        if ints is None or len(offsets) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in ints):
            raise corrupted(f"tensor {name!r} has shape {shape!r} and offsets {offsets!r}")
        begin, end = offsets
        if not begin <= end <= data_bytes or end - begin != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise corrupted(f"tensor {name!r}: shape {shape} of {dtype} does not fit its {end - begin} bytes at {begin}-{end}")
    return header


def read_safetensors(path: Path) -> dict[str, Any]:
    """All tensors of a safetensors file, with a clear error when it is missing, truncated, corrupted or not finite."""
    from safetensors.torch import load_file

    if not path.exists():
        raise TinyDiffError(f"{path} is missing; the model folder is incomplete")
    safetensors_header(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TinyDiffError(f"{path} is truncated or corrupted ({reason}); save or download it again") from None
    return tensors


def check_finite(tensors: dict[str, Any], where: Path) -> None:
    """Every weight a finite number: NaN or infinite weights (a diverged run) draw noise, not digits."""
    import torch

    for name, value in tensors.items():
        if value.dtype.is_floating_point and not bool(torch.isfinite(value).all()):
            raise TinyDiffError(
                f"{where}: tensor {name!r} holds NaN or infinite values; the model is broken "
                "(a diverged run?); sample an earlier checkpoint"
            )


def check_sizes(config: ModelFolderConfig, where: Path) -> None:
    """The sizes ``config.json`` asks for are within what any TinyDiff model uses, before a module is built."""
    m = config.model
    asks = {
        "model.image_size": (m.image_size, MAX_IMAGE_SIZE),
        "model.in_channels": (m.in_channels, MAX_WIDTH),
        "model.channel_mult (levels)": (len(m.channel_mult), MAX_LEVELS),
        "model.num_res_blocks": (m.num_res_blocks, MAX_BLOCKS),
        "model.base_channels x channel_mult": (m.base_channels * max(m.channel_mult), MAX_WIDTH),
        "model.heads": (m.heads, MAX_WIDTH),
        "model.groups": (m.groups, MAX_WIDTH),
    }
    if m.text is not None:
        asks |= {"model.text.dim": (m.text.dim, MAX_WIDTH), "model.text.layers": (m.text.layers, MAX_BLOCKS),
                 "model.text.heads": (m.text.heads, MAX_WIDTH), "model.text.max_length": (m.text.max_length, MAX_WIDTH)}  # fmt: skip
    for key, (value, limit) in asks.items():
        if value > limit:
            raise TinyDiffError(f"{where}: {key} is {value}, more than TinyDiff builds ({limit}); the model folder is not a TinyDiff model")
    if min(m.channel_mult) < 1:
        raise TinyDiffError(f"{where}: model.channel_mult must hold positive numbers, got {m.channel_mult}")


@contextmanager
def _without_init() -> Iterator[None]:
    """``torch.nn.init``'s initializers as no-ops: a network built on the meta device has no values to draw,
    and drawing them there imports ``torch._dynamo`` (over a second of a command's start-up)."""
    from torch.nn import init

    names = [n for n in vars(init) if n.endswith("_") and not n.startswith("_") and callable(getattr(init, n))]
    saved = {n: getattr(init, n) for n in names}
    try:
        for n in names:
            setattr(init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, fn in saved.items():
            setattr(init, n, fn)


def expected_shapes(config: ModelFolderConfig, tokenizer: Any, where: Path) -> dict[str, Any]:
    """The network's tensors (name -> meta tensor: shape and dtype), built on PyTorch's meta device: no memory."""
    import torch

    from .nn.unet import UNet

    try:
        with torch.device("meta"), _without_init():
            return UNet(config.model, tokenizer=tokenizer).state_dict()
    except TinyDiffError:
        raise
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TinyDiffError(f"{where}: its model settings describe no network TinyDiff can build ({reason})") from None


def check_header(header: dict[str, Any], expected: dict[str, Any], where: Path) -> None:
    """The weights file holds exactly the network's tensors, of its shapes and of a floating-point dtype."""
    found = {k: v for k, v in header.items() if k != "__metadata__"}
    for name, ref in expected.items():
        if name not in found:
            raise TinyDiffError(f"{where} lacks tensor {name!r}; it does not match its config.json")
        shape = tuple(found[name]["shape"])
        if shape != tuple(ref.shape):
            raise TinyDiffError(f"{where}: tensor {name!r} has shape {shape}, the config expects {tuple(ref.shape)}")
        if ref.dtype.is_floating_point != (found[name]["dtype"] in FLOAT_DTYPES):
            raise TinyDiffError(f"{where}: tensor {name!r} has dtype {found[name]['dtype']}, expected {ref.dtype}")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise TinyDiffError(f"{where} has unexpected tensor {extra[0]!r}; it does not match its config.json")


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
    weights = folder / WEIGHTS_FILE
    check_sizes(config, folder / CONFIG_FILE)
    tokenizer = read_tokenizer(folder, config) if config.model.text is not None else None
    if not weights.exists():
        raise TinyDiffError(f"{weights} is missing; the model folder is incomplete")
    header = safetensors_header(weights)
    if config.format == FORMAT:  # sizes agree with the weights before the network is allocated
        check_header(header, expected_shapes(config, tokenizer, weights), weights)
    model = UNet(config.model, tokenizer=tokenizer)
    load_weights(model, read_safetensors(weights), config, weights)
    return config, model.to(device).eval()


def read_tokenizer(folder: Path, config: ModelFolderConfig | None = None) -> Any:
    """The tokenizer saved in a text model folder's ``vocab.json``, checked against the hash its ``config.json`` recorded."""
    from .nn.text import Tokenizer

    path = folder / VOCAB_FILE
    data = read_json_object(path, missing=f"{path} is missing; a text model folder needs its {VOCAB_FILE}")
    tokenizer = Tokenizer.from_json(data, source=str(path))
    recorded = config.vocab_sha256 if config is not None else None
    if recorded is not None and vocabulary_hash(tokenizer.tokens) != recorded:
        raise TinyDiffError(
            f"{path} is not the vocabulary this model was trained with (its words or their order differ from "
            f"what {CONFIG_FILE} recorded); put the model's own {VOCAB_FILE} back"
        )
    return tokenizer


def load_weights(model: Any, tensors: dict[str, Any], config: ModelFolderConfig, where: Path) -> None:
    """Check saved UNet weights against the network (names, shapes) and load them, renaming format-1 keys."""
    if config.format == 1:
        from .nn.unet import upgrade_state_dict

        tensors = upgrade_state_dict(tensors, config.model)
    expected = model.state_dict()
    check_tensors(tensors, expected, where)
    check_finite(tensors, where)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})


def load_checkpoint(folder: Path, *, ema: Any, model: Any, optimizer: Any, device_type: str) -> dict[str, Any]:
    """Restore the EMA and raw weights and the optimizer from a checkpoint saved by :func:`save_checkpoint`;
    returns the trainer's own state tensors. Any mismatch with this config is a ``TinyDiffError``."""
    from safetensors import safe_open

    config = read_model_config(folder)
    load_weights(ema, read_safetensors(folder / WEIGHTS_FILE), config, folder / WEIGHTS_FILE)
    state = read_safetensors(folder / STATE_FILE)
    try:
        with safe_open(str(folder / STATE_FILE), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["tinydiff"])
        saved_device = meta.get("device_type", "cpu")
        if saved_device != device_type:
            raise DeviceMismatch(
                f"this run trained on {saved_device}; resume it with --device {saved_device} "
                "(its random-number state belongs to that device)"
            )
        raw = {k[len("model/"):]: v for k, v in state.items() if k.startswith("model/")}
        load_weights(model, raw, config, folder / STATE_FILE)
        per_param: dict[int, dict[str, Any]] = {}
        for key, value in state.items():
            if key.startswith("optim/"):
                _, index, name = key.split("/", 2)
                per_param.setdefault(int(index), {})[name] = value
        _check_optimizer_state(optimizer, per_param, meta["param_groups"])
        optimizer.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
    except KeyError as exc:
        raise InconsistentCheckpoint(folder, f"{STATE_FILE} lacks {exc}") from None
    except (RuntimeError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise InconsistentCheckpoint(folder, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    return {k: v for k, v in state.items() if not k.startswith(("model/", "optim/"))}


def _check_optimizer_state(optimizer: Any, per_param: dict[int, dict[str, Any]], groups: Any) -> None:
    """AdamW's saved tensors must be those of this network's parameters: same count, same shapes."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups) or not all(isinstance(g, dict) for g in groups):
        raise ValueError("its optimizer settings do not describe this network's parameter groups")
    saved_params = [i for g in groups for i in g.get("params", [])]
    if sorted(saved_params) != list(range(len(params))):
        raise ValueError(f"its optimizer settings list {len(saved_params)} parameters, the network has {len(params)}")
    for index, tensors in per_param.items():
        if not 0 <= index < len(params):
            raise ValueError(f"optimizer tensors for parameter {index}, but the network has {len(params)} parameters")
        for name, value in tensors.items():
            if name == "step":
                if value.numel() != 1:
                    raise ValueError(f"optimizer tensor optim/{index}/step has shape {tuple(value.shape)}, expected a number")
            elif tuple(value.shape) != tuple(params[index].shape):
                raise ValueError(
                    f"optimizer tensor optim/{index}/{name} has shape {tuple(value.shape)}, "
                    f"its parameter has {tuple(params[index].shape)}"
                )
            elif not value.dtype.is_floating_point:
                raise ValueError(f"optimizer tensor optim/{index}/{name} has dtype {value.dtype}, expected floating point")


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
        step = parse_step_name(child.name)
        if step is not None and child.is_dir() and is_model_folder(child):
            found.append((step, child))
    return sorted(found)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """Where a run keeps its checkpoint of ``step``: ``checkpoints/step-NNNNNN``."""
    return Path(run_dir) / "checkpoints" / step_name(step)


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
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            check_own_file(path / name)  # a link out of the folder, or a device, is named as such
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
