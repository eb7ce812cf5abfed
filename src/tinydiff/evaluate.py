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


def _sampling_options(sampler: Any, steps: Any, guidance: Any, guidance_interval: Any, spacing: str | None) -> dict[str, Any]:
    """The sampling options as ``pipe.sample`` takes them; ``spacing`` only when asked, as a stand-in pipeline need not take it."""
    given = {"sampler": sampler, "steps": steps, "guidance": guidance, "guidance_interval": guidance_interval}
    if spacing is not None:
        given["spacing"] = spacing
    return given


def evaluate_pipeline(
    pipe: Any,
    *,
    num_per_digit: int = 100,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    guidance_interval: tuple[float, float] | str | None = None,
    spacing: str | None = None,
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
    given = _sampling_options(sampler, steps, guidance, guidance_interval, spacing)
    opts = pipe.options(**given)
    total = 10 * num_per_digit
    # what scoring needs, before the first sample is drawn: the test set (the reference), the training set
    # (the floor's real digits) and the classifier; a missing data folder fails in a second, not after sampling
    _reference_stats(data_dir, "test")
    train_images, _ = load_mnist(data_dir, split="train")
    if total > len(train_images):
        raise TinyDiffError(f"--num-per-digit {num_per_digit} asks for {total} images, more than the {len(train_images)} "
                            "training images the real-data floor draws from; ask for fewer")  # fmt: skip
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
        "spacing": getattr(opts, "spacing", None),
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
    spacing: str | None = None,
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
    given = _sampling_options(sampler, steps, guidance, guidance_interval, spacing)
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


# -- whole numbers ------------------------------------------------------------------


def cut_out_digits(canvases: torch.Tensor, num_digits: int) -> torch.Tensor:
    """Each digit's window of uint8 canvases ``[N, 28, W]`` of ``num_digits`` digits, as ``[N, num_digits, 28, 28]``."""
    from .diffusion import number_canvas

    width, offsets = number_canvas(num_digits, canvases.shape[-2])
    if canvases.ndim != 3 or canvases.shape[-1] != width:
        raise TinyDiffError(f"canvases of {num_digits} digits are [N, 28, {width}], got {tuple(canvases.shape)}")
    size = canvases.shape[-2]
    return torch.stack([canvases[..., o : o + size] for o in offsets], dim=1)


def evaluate_numbers(
    pipe: Any,
    *,
    lengths: Sequence[int] = (2, 4, 6),
    num_per_digit: int = 20,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    guidance_interval: tuple[float, float] | str | None = None,
    spacing: str | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
    batch_windows: int = 500,
    callback: Any = None,
) -> dict[str, Any]:
    """Score whole numbers: draw random numbers of each length, cut each digit's window out, and read it.

    Each length gets ``10 * num_per_digit`` digits (rounded down to whole numbers), asked as
    "the number 4821" with uniformly random digits. Reports digit accuracy by length and
    position, the share of numbers read entirely right, the MNIST-FD of all cut-out digits
    beside that of the same digits sampled one by one ("a handwritten four") at the same N,
    and the seconds per number beside those per single digit, both timed in this run.
    """
    import time

    from .captions import DIGIT_WORDS
    from .diffusion import number_canvas

    if not getattr(pipe, "is_text_model", False):
        raise TinyDiffError("--numbers needs a text model: numbers are drawn from prompts; this one is unconditional")
    if num_per_digit < 2:
        raise TinyDiffError(f"--num-per-digit must be at least 2 (a Frechet distance needs a spread), got {num_per_digit}")
    from .prompts import MAX_NUMBER_DIGITS

    if not lengths or any(not 2 <= k <= MAX_NUMBER_DIGITS for k in lengths):
        raise TinyDiffError(f"number lengths must be between 2 and {MAX_NUMBER_DIGITS} digits, got {list(lengths)}")
    given = _sampling_options(sampler, steps, guidance, guidance_interval, spacing)
    opts = pipe.options(**given)
    rng = torch.Generator().manual_seed(seed)
    pipe.sample(1, prompts=["the number 42"], seed=seed, **given)  # warm-up: the first call's one-off costs stay out of the times
    total_windows = sum(10 * num_per_digit // k * k for k in lengths)
    done = 0
    by_length: dict[str, Any] = {}
    cut_outs, asked_digits = [], []
    for k in lengths:
        count = 10 * num_per_digit // k
        digits = torch.randint(0, 10, (count, k), generator=rng)
        prompts = ["the number " + "".join(map(str, row)) for row in digits.tolist()]
        per_batch = max(1, batch_windows // k)
        chunks = []
        start = time.perf_counter()
        for first in range(0, count, per_batch):
            batch = prompts[first : first + per_batch]
            chunks.append(pipe.sample(len(batch), prompts=batch, seed=seed + 1000 * k + first, **given))
            done += len(batch) * k
            if callback is not None:
                callback({"done": done, "total": total_windows})
        seconds = time.perf_counter() - start
        windows = cut_out_digits(torch.cat(chunks), k)  # [count, k, 28, 28]
        read = predict(windows.flatten(0, 1)).view(count, k)
        hit = read == digits
        by_length[str(k)] = {
            "numbers": count,
            "canvas_width": number_canvas(k, windows.shape[-1])[0],
            "digit_accuracy": float(hit.double().mean()),
            "accuracy_by_position": [float(a) for a in hit.double().mean(0)],
            "numbers_right": float(hit.all(1).double().mean()),
            "seconds_per_number": seconds / count,
        }
        cut_outs.append(windows.flatten(0, 1))
        asked_digits.append(digits.flatten())
    # the same digits, each sampled alone: the reference for the cut-outs' quality and for the time
    asked = torch.cat(asked_digits)
    singles = []
    start = time.perf_counter()
    for first in range(0, len(asked), batch_windows):
        batch = [f"a handwritten {DIGIT_WORDS[d]}" for d in asked[first : first + batch_windows].tolist()]
        singles.append(pipe.sample(len(batch), prompts=batch, seed=seed + first, **given))
    single_seconds = (time.perf_counter() - start) / len(asked)
    singles_t, cut_t = torch.cat(singles), torch.cat(cut_outs)
    for k, row in zip(lengths, by_length.values()):
        row["time_vs_single_digit"] = row["seconds_per_number"] / single_seconds
        row["time_vs_k_single_digits"] = row["seconds_per_number"] / (k * single_seconds)
    fd_numbers, fd_single = mnist_fd(cut_t, data_dir=data_dir), mnist_fd(singles_t, data_dir=data_dir)
    return {
        "model": str(getattr(pipe, "path", "")),
        "sampler": opts.sampler,
        "steps": opts.steps,
        "guidance": opts.guidance,
        "guidance_interval": list(opts.guidance_interval) if opts.guidance_interval is not None else None,
        "lengths": by_length,
        "digits": len(asked),
        "digit_accuracy": float((predict(cut_t) == asked).double().mean()),
        "single_digit_accuracy": float((predict(singles_t) == asked).double().mean()),
        "mnist_fd_cut_out": fd_numbers,
        "mnist_fd_single": fd_single,
        "mnist_fd_ratio": fd_numbers / max(fd_single, 1e-12),
        "mnist_fd_floor": real_fd_floor(len(asked), data_dir=data_dir, seed=seed),
        "seconds_per_single_digit": single_seconds,
    }
