"""Judging samples with a small shipped MNIST classifier: digit accuracy and MNIST-FD.

MNIST-FD is FID (Heusel et al. 2017) with Inception swapped for this classifier's
128 penultimate features, measured against the MNIST test set. FD is biased
upwards at small N, so compare a score with ``real_fd_floor`` at the same N::

    from tinydiff.evaluate import mnist_fd, real_fd_floor, prompt_accuracy
    mnist_fd(images)                  # images: uint8 [N, 28, 28]
    real_fd_floor(len(images))        # what real digits score at that N
    prompt_accuracy(images, digits)   # {"accuracy": ..., "per_digit": {...}}

The weights (``weights/classifier.safetensors``) come from
``benchmarks/train_classifier.py`` and load with safetensors only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .checkpoint import check_tensors, read_safetensors
from .data import default_data_dir, load_mnist, to_model_range
from .errors import TinyDiffError

FEATURE_DIM = 128
WEIGHTS_RESOURCE = "weights/classifier.safetensors"


class DigitClassifier(nn.Module):
    """A small LeNet-style CNN (LeCun et al. 1998) with BatchNorm: [N, 1, 28, 28] in [-1, 1] -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        # each stage is conv -> max-pool -> BatchNorm -> ReLU: pooling first keeps CPU training to minutes
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)  # 28x28 -> 14x14; no bias: BatchNorm follows
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)  # 14x14 -> 7x7
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1, bias=False)  # 7x7 -> 3x3
        self.bn3 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64 * 3 * 3, FEATURE_DIM)  # the penultimate layer: MNIST-FD's features
        self.dropout = nn.Dropout(0.3)  # active only in training
        self.out = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations [N, 128] (after ReLU), the analogue of Inception's pool3 in FID."""
        pool = nn.functional.max_pool2d
        x = torch.relu(self.bn1(pool(self.conv1(x), 2)))
        x = torch.relu(self.bn2(pool(self.conv2(x), 2)))
        x = torch.relu(self.bn3(pool(self.conv3(x), 2)))
        return torch.relu(self.fc(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(self.features(x)))


# -- loading ---------------------------------------------------------------------


def shipped_weights_path() -> Path:
    """Where the package keeps the classifier's weights (importlib.resources)."""
    from importlib import resources

    return Path(str(resources.files("tinydiff").joinpath(WEIGHTS_RESOURCE)))


def load_classifier(path: str | Path | None = None, device: str | torch.device = "cpu") -> DigitClassifier:
    """The classifier in eval mode, from ``path`` or the shipped weights (cached per process); safetensors only."""
    if path is None:
        return _load_shipped(str(torch.device(device)))
    return _load(Path(path), device)


@functools.lru_cache(maxsize=None)
def _load_shipped(device: str) -> DigitClassifier:
    path = shipped_weights_path()
    if not path.is_file():
        raise TinyDiffError(
            f"the classifier's weights are not installed ({path}); "
            "run `python benchmarks/train_classifier.py` or reinstall tinydiff"
        )
    return _load(path, device)


def _load(path: Path, device: str | torch.device) -> DigitClassifier:
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the global RNG, which a run
        model = DigitClassifier()  # checkpoints, as it was (an --eval-every run resumes bit for bit)
    expected = model.state_dict()
    tensors = read_safetensors(path)
    check_tensors(tensors, expected, path)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    return model.to(device).eval().requires_grad_(False)


# -- classifying -----------------------------------------------------------------


def _check_images(images: Any) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 3 or tuple(images.shape[1:]) != (28, 28):
        raise TinyDiffError(
            f"expected uint8 images [N, 28, 28], got {images.dtype} {tuple(images.shape)}; "
            "convert model output with tinydiff.data.to_uint8"
        )
    return images


@torch.no_grad()
def _run(images: Any, method: str, classifier: DigitClassifier | None, batch_size: int) -> torch.Tensor:
    images = _check_images(images)
    model = classifier if classifier is not None else load_classifier()
    device = next(model.parameters()).device
    outputs = [getattr(model, method)(to_model_range(chunk).to(device)).cpu() for chunk in images.split(batch_size)]
    return torch.cat(outputs) if outputs else torch.empty(0, FEATURE_DIM if method == "features" else 10)


def predict(images: torch.Tensor, *, classifier: DigitClassifier | None = None, batch_size: int = 512) -> torch.Tensor:
    """The classifier's digit for each uint8 image [N, 28, 28], as int64 [N]."""
    return _run(images, "forward", classifier, batch_size).argmax(1)


def features(images: torch.Tensor, *, classifier: DigitClassifier | None = None, batch_size: int = 512) -> torch.Tensor:
    """Penultimate features of uint8 images [N, 28, 28], as float64 [N, 128]."""
    return _run(images, "features", classifier, batch_size).double()


# -- Fréchet distance --------------------------------------------------------------


def gaussian_stats(feats: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (float64) of features [N, D], the Gaussian FID fits (Heusel et al. 2017)."""
    x = torch.as_tensor(feats).double()
    if x.ndim != 2 or len(x) < 2:
        raise TinyDiffError(f"Fréchet distance needs features [N, D] with N >= 2, got shape {tuple(x.shape)}")
    mu = x.mean(0)
    centered = x - mu
    return mu, centered.T @ centered / (len(x) - 1)


def frechet_distance_from_stats(
    mu_a: torch.Tensor, sigma_a: torch.Tensor, mu_b: torch.Tensor, sigma_b: torch.Tensor
) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}) (Heusel et al. 2017, eq. 6), in float64."""
    mu_a, sigma_a, mu_b, sigma_b = (t.double() for t in (mu_a, sigma_a, mu_b, sigma_b))
    if mu_a.shape != mu_b.shape:
        raise TinyDiffError(f"cannot compare features of dimension {mu_a.shape[0]} and {mu_b.shape[0]}")
    # 1. squared distance between the means
    mean_term = (mu_a - mu_b).square().sum()
    # 2. S_a S_b is similar to sqrt(S_a) S_b sqrt(S_a), which is symmetric PSD: Tr((S_a S_b)^{1/2}) is the
    #    sum of the square roots of its eigenvalues (round-off negatives clamped to 0); no scipy sqrtm
    w, v = torch.linalg.eigh(sigma_a)
    sqrt_a = (v * w.clamp_min(0).sqrt()) @ v.T
    m = sqrt_a @ sigma_b @ sqrt_a
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    # 3. eq. 6; a round-off negative (identical inputs) is reported as 0
    fd = mean_term + torch.trace(sigma_a) + torch.trace(sigma_b) - 2 * tr_covmean
    return max(float(fd), 0.0)


def frechet_distance(feats_a: Any, feats_b: Any) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] (Heusel et al. 2017, eq. 6)."""
    return frechet_distance_from_stats(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


# -- MNIST-FD --------------------------------------------------------------------


_REFERENCE_STATS: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}


def _reference_stats(data_dir: str | Path | None, reference: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian statistics of the shipped classifier's features of a whole MNIST split, cached per folder."""
    key = (str(Path(data_dir).expanduser().resolve() if data_dir is not None else default_data_dir()), reference)
    if key not in _REFERENCE_STATS:
        images, _ = load_mnist(data_dir, split=reference)
        _REFERENCE_STATS[key] = gaussian_stats(features(images))
    return _REFERENCE_STATS[key]


def mnist_fd(
    images: torch.Tensor,
    *,
    data_dir: str | Path | None = None,
    reference: Literal["test", "train"] = "test",
    classifier: DigitClassifier | None = None,
) -> float:
    """MNIST-FD: FID (Heusel et al. 2017) on the classifier's features, images vs a whole MNIST split."""
    if reference not in ("test", "train"):
        raise TinyDiffError(f"reference must be 'test' or 'train', got {reference!r}")
    stats = gaussian_stats(features(images, classifier=classifier))
    if classifier is None:  # the shipped classifier: the reference statistics are cached per process
        ref = _reference_stats(data_dir, reference)
    else:
        ref = gaussian_stats(features(load_mnist(data_dir, split=reference)[0], classifier=classifier))
    return frechet_distance_from_stats(*stats, *ref)


def real_fd_floor(n: int, *, data_dir: str | Path | None = None, seed: int = 0) -> float:
    """MNIST-FD of ``n`` random *training* images vs the test set: what a perfect generator scores at that N."""
    # real digits from outside the reference, scored exactly as mnist_fd scores samples; not the test set's
    # two halves: its first 5,000 digits are cleaner than its last 5,000 (LeCun et al.), FD 8.6 between them
    train, _ = load_mnist(data_dir, split="train")
    if not 2 <= n <= len(train):
        raise TinyDiffError(f"n must be between 2 and {len(train)} (the training images), got {n}")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    return mnist_fd(train[idx], data_dir=data_dir, reference="test")


# -- digit accuracy ----------------------------------------------------------------


def prompt_accuracy(
    images: torch.Tensor, asked_digits: Sequence[int] | torch.Tensor, *, classifier: DigitClassifier | None = None
) -> dict[str, Any]:
    """How often the classifier reads the asked digit: overall and per asked digit (fractions in [0, 1])."""
    asked = torch.as_tensor(asked_digits, dtype=torch.int64).flatten()
    images = _check_images(images)
    if len(asked) != len(images):
        raise TinyDiffError(f"got {len(images)} images but {len(asked)} asked digits; give one digit per image")
    if len(asked) and not (0 <= int(asked.min()) and int(asked.max()) <= 9):
        raise TinyDiffError("asked digits must be between 0 and 9")
    hit = (predict(images, classifier=classifier) == asked).double()
    per_digit = {d: float(hit[asked == d].mean()) for d in sorted(set(asked.tolist()))}
    counts = {d: int((asked == d).sum()) for d in per_digit}
    overall = float(hit.mean()) if len(hit) else float("nan")
    return {"accuracy": overall, "per_digit": per_digit, "counts": counts, "n": len(asked)}


def confidence(images: torch.Tensor, *, classifier: DigitClassifier | None = None) -> float:
    """The classifier's mean top-class probability: near 1 when every image reads as some digit without doubt."""
    probabilities = _run(images, "forward", classifier, 512).softmax(1)
    return float(probabilities.max(1).values.mean()) if len(probabilities) else float("nan")


def class_histogram(images: torch.Tensor, *, classifier: DigitClassifier | None = None) -> list[int]:
    """How many images the classifier reads as each digit 0..9 (10 counts): mode coverage at a glance."""
    return torch.bincount(predict(images, classifier=classifier), minlength=10).tolist()


# -- a whole model ------------------------------------------------------------------


def evaluate_pipeline(
    pipe: Any,
    *,
    num_per_digit: int = 100,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    guidance_interval: tuple[float, float] | str | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
    batch_size: int = 500,
    callback: Any = None,
) -> dict[str, Any]:
    """Sample ``num_per_digit`` images per digit and score them: prompt accuracy, MNIST-FD beside its floor, speed.

    A text model is asked "a handwritten <digit>" for each digit; an unconditional model
    draws ``10 * num_per_digit`` images and gets MNIST-FD and its class histogram only.
    Sampling options left at None are the pipeline's defaults, as for ``tinydiff sample``.
    """
    import time

    from .captions import DIGIT_WORDS

    if num_per_digit < 2:
        raise TinyDiffError(f"--num-per-digit must be at least 2 (a Frechet distance needs a spread), got {num_per_digit}")
    if num_per_digit > 1000:
        raise TinyDiffError(f"--num-per-digit is at most 1000 (10,000 images, the size of MNIST's test set), got {num_per_digit}")
    given = {"sampler": sampler, "steps": steps, "guidance": guidance, "guidance_interval": guidance_interval}
    opts = pipe.options(**given)
    total = 10 * num_per_digit
    asked = torch.arange(10).repeat_interleave(num_per_digit)
    conditional = bool(getattr(pipe, "is_text_model", False))
    evaluations = 0
    chunks = []
    start = time.perf_counter()
    for first in range(0, total, batch_size):
        digits = asked[first : first + batch_size]
        prompts = [f"a handwritten {DIGIT_WORDS[d]}" for d in digits.tolist()] if conditional else None
        calls = []
        chunks.append(pipe.sample(len(digits), prompts=prompts, seed=seed + first, callback=calls.append, **given))
        evaluations = len(calls)  # network evaluations per image (guidance is one batched evaluation)
        if callback is not None:
            callback({"done": first + len(digits), "total": total})
    seconds = time.perf_counter() - start
    images = torch.cat(chunks)
    report: dict[str, Any] = {
        "model": str(getattr(pipe, "path", "")),
        "conditional": conditional,
        "sampler": opts.sampler,
        "steps": opts.steps,
        "nfe": evaluations,
        "guidance": opts.guidance if conditional else None,
        "guidance_interval": list(opts.guidance_interval) if conditional and opts.guidance_interval is not None else None,
        "num_images": total,
        "num_per_digit": num_per_digit,
        "seconds": seconds,
        "images_per_s": total / max(seconds, 1e-9),
        "mnist_fd": mnist_fd(images, data_dir=data_dir),
        "mnist_fd_floor": real_fd_floor(total, data_dir=data_dir, seed=seed),
        "class_histogram": class_histogram(images),
        "confidence": confidence(images),
    }
    report["fd_ratio"] = report["mnist_fd"] / max(report["mnist_fd_floor"], 1e-12)
    if conditional:
        acc = prompt_accuracy(images, asked)
        report["accuracy"] = acc["accuracy"]
        report["per_digit_accuracy"] = {str(d): a for d, a in acc["per_digit"].items()}
        report["min_digit_accuracy"] = min(acc["per_digit"].values())
    return report


STYLE_PROMPTS = {  # {word}: the digit word; each pair is sampled from the same noise
    "bold": "a bold {word}",
    "thin": "a thin {word}",
    "leaning right": "a {word} leaning right",
    "leaning left": "a {word} leaning left",
    "large": "a large {word}",
    "small": "a small {word}",
}


def style_report(
    pipe: Any,
    *,
    num_per_digit: int = 10,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    guidance_interval: tuple[float, float] | str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Are style words obeyed? Ink of "bold"/"thin", slant of "leaning right"/"leaning left", extent of "large"/"small".

    Every digit is asked ``num_per_digit`` times with each style prompt, the two prompts of a
    pair from the same starting noise. Reports the mean ink per image (sum of pixel values / 255)
    of "bold" over "thin" (above 1 means bolder), the mean stroke thickness of each, the mean
    slant of "leaning right" and "leaning left" (shear of the central moments, positive to the
    right: opposite signs mean obeyed), and the mean extent (the larger side of the bounding
    box, in pixels) of "large" over "small" (above 1 means obeyed; a model learns the size
    words only when trained with ``train.scale_augment``), with each group's prompt accuracy.
    """
    from .captions import DIGIT_WORDS, measure_style, size_extent

    if not getattr(pipe, "is_text_model", False):
        raise TinyDiffError("style words need a text model; this one is unconditional")
    given = {"sampler": sampler, "steps": steps, "guidance": guidance, "guidance_interval": guidance_interval}
    digits = torch.arange(10).repeat_interleave(num_per_digit)
    groups: dict[str, dict[str, float]] = {}
    for name, template in STYLE_PROMPTS.items():
        prompts = [template.format(word=DIGIT_WORDS[d]) for d in digits.tolist()]
        images = pipe.sample(len(prompts), prompts=prompts, seed=seed, **given)
        measured = measure_style(images)
        groups[name] = {
            "ink": float(images.double().sum((1, 2)).div(255).mean()),
            "thickness": float(measured["thickness"].mean()),
            "slant": float(measured["slant"].mean()),
            "extent": float(size_extent(measured).mean()),
            "accuracy": prompt_accuracy(images, digits)["accuracy"],
        }
    return {
        "num_per_prompt": len(digits),
        "groups": groups,
        "bold_thin_ink_ratio": groups["bold"]["ink"] / max(groups["thin"]["ink"], 1e-9),
        "bold_thin_thickness_ratio": groups["bold"]["thickness"] / max(groups["thin"]["thickness"], 1e-9),
        "slant_right": groups["leaning right"]["slant"],
        "slant_left": groups["leaning left"]["slant"],
        "large_small_extent_ratio": groups["large"]["extent"] / max(groups["small"]["extent"], 1e-9),
    }
