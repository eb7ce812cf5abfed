"""MNIST from its original IDX files, held in memory as one uint8 tensor, and the batches training draws.

The data folder is ``--data-dir``, else ``TINYDIFF_DATA_DIR``, else a user cache
folder. It holds ``MNIST/raw/*.gz`` (torchvision's layout), or the four ``.gz``
files directly. Missing files are downloaded from torchvision's mirrors.

:class:`TrainingData` draws each step's images and, for text models, a fresh true
caption for each; everything it draws is seeded by the run, so a resumed run draws
exactly what an uninterrupted one would.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import struct
import zlib
from pathlib import Path
from typing import Any

import torch

from .errors import TinyDiffError

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
ALL_FILES = [name for pair in FILES.values() for name in pair]


def default_data_dir() -> Path:
    """``TINYDIFF_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/tinydiff/data`` (``~/.cache/tinydiff/data``)."""
    env = os.environ.get("TINYDIFF_DATA_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "tinydiff" / "data"


def _raw_dir(root: Path, split: str) -> Path | None:
    """The folder holding the split's files: ``root/MNIST/raw`` or ``root`` itself."""
    for candidate in (root / "MNIST" / "raw", root):
        if all((candidate / name).is_file() for name in FILES[split]):
            return candidate
    return None


def read_idx(path: Path) -> torch.Tensor:
    """Read a gzipped IDX file (LeCun et al. 1998): big-endian magic and sizes, then uint8 data."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise TinyDiffError(f"cannot read {path} ({exc}); delete it so it is downloaded again") from None
    if len(data) < 8:
        raise TinyDiffError(f"{path} is truncated; delete it so it is downloaded again")
    magic, count = struct.unpack(">II", data[:8])
    if magic == 2049:  # labels: count
        dims: tuple[int, ...] = (count,)
    elif magic == 2051 and len(data) >= 16:  # images: count, rows, cols
        dims = (count, *struct.unpack(">II", data[8:16]))
    elif magic == 2051:
        raise TinyDiffError(f"{path} is truncated; delete it so it is downloaded again")
    else:
        raise TinyDiffError(f"{path} is not an MNIST IDX file (magic number {magic})")
    offset = 8 + 4 * (len(dims) - 1)
    size = 1
    for d in dims:
        size *= d
    if len(data) - offset != size:
        raise TinyDiffError(f"{path} holds {len(data) - offset} bytes of data, expected {size}; it is corrupted")
    if size == 0:
        return torch.empty(dims, dtype=torch.uint8)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8, offset=offset).reshape(dims)


def load_mnist(data_dir: str | Path | None = None, *, split: str = "train", download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST images as uint8 ``[N, 28, 28]`` and labels as int64 ``[N]``; downloads them when missing.

    The images tensor is shared by every caller in the process: index or copy it, never change it in place.
    """
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    explicit = data_dir is not None or "TINYDIFF_DATA_DIR" in os.environ
    if root.exists() and not root.is_dir():
        raise TinyDiffError(f"data directory {str(root)!r} is a file; point --data-dir at a folder")
    if explicit and not root.exists():
        raise TinyDiffError(
            f"data directory {str(root)!r} does not exist; create it (MNIST is then downloaded into it) "
            "or point --data-dir / TINYDIFF_DATA_DIR at the folder holding MNIST/raw"
        )
    if root.exists() and not os.access(root, os.R_OK | os.X_OK):
        raise TinyDiffError(f"data directory {str(root)!r} is not readable; fix its permissions or use another --data-dir")
    raw = _raw_dir(root, split)
    if raw is None:
        if not download:
            raise TinyDiffError(missing_files_message(root))
        raw = download_mnist(root)
    images_file, labels_file = FILES[split]
    images, labels = _read_split(raw / images_file, raw / labels_file)
    return images, labels.long()


_SPLITS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _read_split(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Both files of a split, checked against each other; kept per process while the files are unchanged
    (unpacking the training images takes a second or two, and training, evaluation and tests ask often)."""
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in (images_path, labels_path)]
    key = tuple(stats)
    if key not in _SPLITS:
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise TinyDiffError(
                f"MNIST files in {images_path.parent} do not match: {tuple(images.shape)} images, {tuple(labels.shape)} labels"
            )
        if len(labels) and int(labels.max()) > 9:
            first = int(torch.nonzero(labels > 9)[0])
            raise TinyDiffError(
                f"{labels_path} holds label {int(labels[first])} (item {first}); MNIST labels are 0-9, "
                "so the file is corrupted or not MNIST: replace it"
            )
        if len(_SPLITS) >= 4:  # both splits of two folders at most
            del _SPLITS[next(iter(_SPLITS))]
        _SPLITS[key] = (images, labels)
    return _SPLITS[key]


def missing_files_message(root: Path) -> str:
    return (
        f"MNIST is not in {root} and could not be downloaded; place {', '.join(ALL_FILES)} "
        f"in {root / 'MNIST' / 'raw'} (or set TINYDIFF_DATA_DIR to a folder that holds MNIST/raw)"
    )


def mirrors() -> list[str]:
    """torchvision's MNIST mirrors (imported lazily: torchvision is slow to import)."""
    try:
        from torchvision.datasets import MNIST

        return list(MNIST.mirrors)
    except Exception:  # torchvision missing or changed: its long-standing mirrors
        return ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]


def download_mnist(root: Path) -> Path:
    """Fetch the four files into ``root/MNIST/raw``, each checked by md5 and written atomically.

    When no mirror answers, the folders this call created are removed again: a failed
    download leaves the data folder as it found it.
    """
    import urllib.request

    from .files import write_atomic

    raw = root / "MNIST" / "raw"
    created = [d for d in (root, root / "MNIST", raw) if not d.exists()]
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TinyDiffError(f"cannot create {raw} to download MNIST into: {exc}; use another --data-dir") from None
    try:
        for name in ALL_FILES:
            target = raw / name
            if target.is_file():
                continue
            for mirror in mirrors():
                try:
                    with urllib.request.urlopen(mirror + name, timeout=30) as response:
                        payload = response.read()
                except Exception:
                    continue
                if hashlib.md5(payload).hexdigest() == MD5[name]:
                    write_atomic(target, payload)
                    break
            else:
                raise TinyDiffError(missing_files_message(root))
    except BaseException:
        for folder in reversed(created):  # innermost first; only if still empty
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
    return raw


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W] in 0..255 -> float [N, 1, H, W] in [-1, 1], the range the model sees."""
    return images.unsqueeze(1).float().div_(127.5).sub_(1.0)


def rescale_images(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Scale uint8 ``[N, H, W]`` images about their centre by ``factors`` ``[N]`` (bilinear), as uint8.

    A factor above 1 enlarges (what leaves the frame is cut), below 1 shrinks (the border
    fills with background). MNIST digits sit centred in a 20-pixel box, so 0.6 gives a
    12-pixel digit ("small") and 1.25 a 25-pixel one ("large").
    """
    import torch.nn.functional as F

    x = images.float().unsqueeze(1) / 255.0
    theta = torch.zeros(len(images), 2, 3, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / factors.to(images.device).float()  # output coords -> input coords
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out.squeeze(1) * 255.0).round().clamp(0, 255).to(torch.uint8)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [N, 1, H, W] in [-1, 1] -> uint8 [N, H, W]."""
    return ((x.squeeze(1).clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).cpu()


class BatchSampler:
    """Shuffled batches, a fresh permutation each epoch, from its own generator; its state resumes exactly."""

    def __init__(self, size: int, batch_size: int, *, seed: int) -> None:
        self.size = size
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.position = 0
        self.order = torch.randperm(size, generator=self.generator)

    def next(self) -> torch.Tensor:
        """Indices of the next batch; an epoch's last, short batch is dropped."""
        if self.position + self.batch_size > self.size:
            self.order = torch.randperm(self.size, generator=self.generator)
            self.epoch += 1
            self.position = 0
        idx = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return idx

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "order": self.order.clone(),
            "rng": self.generator.get_state(),
            "counters": torch.tensor([self.epoch, self.position], dtype=torch.int64),
        }

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a saved state; one that does not fit this data set (edited, another data set's) is a ValueError."""
        order, counters = state["order"], state["counters"]
        if order.dtype != torch.int64 or tuple(order.shape) != (self.size,):
            raise ValueError(f"its data order has shape {tuple(order.shape)} ({order.dtype}), the data set has {self.size} images")
        if not torch.equal(torch.sort(order).values, torch.arange(self.size)):
            bad = order[(order < 0) | (order >= self.size)]
            what = f"index {int(bad[0])} beyond the {self.size} images" if len(bad) else "repeated indices"
            raise ValueError(f"its data order holds {what}")
        if tuple(counters.shape) != (2,) or counters.dtype.is_floating_point:
            raise ValueError(f"its data counters have shape {tuple(counters.shape)}, expected (2,)")
        epoch, position = (int(v) for v in counters)
        if epoch < 0 or not 0 <= position <= self.size:
            raise ValueError(f"its data position {position} (epoch {epoch}) is outside the {self.size} images")
        self.generator.set_state(state["rng"])
        self.order = order.clone()
        self.epoch, self.position = epoch, position


SCALE_RANGE = (0.6, 1.3)  # train.scale_augment: a 20-pixel MNIST digit becomes 12 to 26 pixels tall


class TrainingData:
    """The training images, their shuffled order, scale augmentation and (text models) a caption per image.

    :meth:`batch` returns one global batch: under DDP every rank draws the same one and
    trains on its own slice, so N processes see what one process with N times the batch would.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, seed: int,
                 captions: bool, scale_augment: float) -> None:  # fmt: skip
        self.images, self.labels = images, labels
        self.seed = seed
        self.scale_augment = scale_augment
        self.order = BatchSampler(len(images), batch_size, seed=seed + 1)
        self.captions = self.style = None
        if captions:  # milestone 4: a fresh caption for each image each time it is seen
            from .captions import CaptionGenerator, style_codes

            self.captions = CaptionGenerator()
            self.style = style_codes(images)

    def batch(self, step: int) -> tuple[torch.Tensor, list[str] | None]:
        """uint8 images ``[B, H, W]`` and their captions (None for unconditional models) for ``step``.

        Scale augmentation and captions are seeded by the step, the order by the run: both resume exactly.
        """
        index = self.order.next()
        images = self.images[index.to(self.images.device)]
        codes = self.style[index] if self.style is not None else None
        if self.scale_augment > 0:  # rescale some images, and re-measure their style so "small"/"large" are true
            images, codes = self._rescale(images, codes, step)
        captions = None
        if self.captions is not None:
            rng = random.Random(self.seed * 1_000_003 + step)
            captions = self.captions.captions_for_batch(self.labels[index], codes, rng)
        return images, captions

    def _rescale(self, images: torch.Tensor, codes: Any, step: int) -> tuple[torch.Tensor, Any]:
        n = len(images)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step + 500_000_000)
        chosen = torch.rand(n, generator=gen) < self.scale_augment
        factors = torch.empty(n).uniform_(SCALE_RANGE[0], SCALE_RANGE[1], generator=gen)
        if not chosen.any():
            return images, codes
        scaled = rescale_images(images[chosen.to(images.device)].cpu(), factors[chosen])
        images = images.clone()
        images[chosen.to(images.device)] = scaled.to(images.device)
        if codes is not None:
            from .captions import style_codes

            codes = codes.clone()
            codes[chosen] = style_codes(scaled)
        return images, codes

    def state(self) -> dict[str, torch.Tensor]:
        return self.order.state()

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.order.load_state(state)
