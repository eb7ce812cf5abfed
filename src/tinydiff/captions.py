"""Captions for MNIST digits: style measured from pixels, then varied natural phrasings of it.

Every style word in a caption is true of its image: :func:`measure_style` computes
stroke thickness, slant and extent from the pixels, :func:`style_codes` turns them
into a code per attribute (0 = no word: the image sits in an ambiguous band), and
:class:`CaptionGenerator` phrases a label and those words freshly on each draw.

Codes are an int64 ``[N, 3]`` tensor, columns (thickness, slant, size), indexing
:data:`THICKNESS_WORDS`, :data:`SLANT_WORDS` and :data:`SIZE_WORDS`.
Thresholds come from the MNIST training set: ``python benchmarks/style_thresholds.py``.
"""

from __future__ import annotations

import random

import torch

from .errors import TinyDiffError
from .nn.text import normalize

StyleWords = tuple[str | None, str | None, str | None]  # (thickness, slant, size); None: say nothing

INK_LEVEL = 127  # thickness: a pixel is ink above this (half of 255)
EXTENT_LEVEL = 50  # height and width: the bounding box of pixels above this, so faint antialiasing is left out

# Thresholds, from benchmarks/style_thresholds.py on the 60,000 training images.
THIN_MAX_THICKNESS = 2.4  # q0.24 of thickness (median 2.83): the thinnest quarter is "thin"
BOLD_MIN_THICKNESS = 3.35  # q0.75 of thickness: the thickest quarter is "bold"
UPRIGHT_MAX_SLANT = 0.08  # |slant| <= 0.08 (4.6 degrees, q0.22 of |slant|): "upright"
LEANING_MIN_SLANT = 0.20  # |slant| >= 0.20 (11.3 degrees): slant q0.12 is -0.20, q0.64 is +0.20
# MNIST scales every digit into a 20-pixel box: max(height, width) is 20 for 99.92% of the
# training images (q0.001 = 19), so no quantile separates sizes. These are fixed fractions
# of that box instead; they mark almost no raw training image and need scale augmentation.
SMALL_MAX_EXTENT = 15  # at most 75% of MNIST's 20-pixel box: "small" (0.002% of training images)
LARGE_MIN_EXTENT = 23  # at least 115% of the box: "large" (no training image)

THICKNESS_WORDS: tuple[str | None, ...] = (None, "thin", "bold")
SLANT_WORDS: tuple[str | None, ...] = (None, "leaning left", "upright", "leaning right")
SIZE_WORDS: tuple[str | None, ...] = (None, "small", "large")
STYLE_ATTRIBUTES = ("thickness", "slant", "size")
STYLE_WORD_TABLES = (THICKNESS_WORDS, SLANT_WORDS, SIZE_WORDS)



def measure_style(images: torch.Tensor, *, chunk: int = 4096) -> dict[str, torch.Tensor]:
    """Per-image float32 ``thickness``, ``slant``, ``height`` and ``width`` of uint8 ``[N, H, W]`` images."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 3:
        found = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise TinyDiffError(f"measure_style takes uint8 images [N, H, W] in 0..255, got {found}")
    parts = [_measure(images[i : i + chunk].cpu()) for i in range(0, len(images), chunk)]
    if not parts:
        return {name: torch.zeros(0) for name in ("thickness", "slant", "height", "width")}
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def _measure(x: torch.Tensor) -> dict[str, torch.Tensor]:
    n, h, w = x.shape
    # 1. thickness = 2 * ink area / boundary pixels: a w-wide stroke has ~2 boundary pixels per w ink pixels
    ink = x > INK_LEVEL
    padded = torch.zeros(n, h + 2, w + 2, dtype=torch.bool)
    padded[:, 1:-1, 1:-1] = ink
    interior = ink & padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    area = ink.sum((1, 2)).float()
    boundary = (ink & ~interior).sum((1, 2)).float()
    thickness = 2 * area / boundary.clamp(min=1)
    # 2. slant = -mu11 / mu02, the shear of the intensity-weighted central moments (x right, y down)
    intensity = x.float()
    rows, cols = intensity.sum(2), intensity.sum(1)
    mass = rows.sum(1).clamp(min=1)
    ys, xs = torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32)
    dy = ys - (rows @ ys / mass)[:, None]
    dx = xs - (cols @ xs / mass)[:, None]
    mu02 = (rows * dy**2).sum(1)
    mu11 = torch.einsum("nyx,ny,nx->n", intensity, dy, dx)
    slant = torch.where(mu02 > 0, -mu11 / mu02.clamp(min=1e-6), torch.zeros_like(mu02))
    # 3. bounding box of the pixels above EXTENT_LEVEL (0 for an empty image)
    return {"thickness": thickness, "slant": slant, "height": _extent((x > EXTENT_LEVEL).any(2)),
            "width": _extent((x > EXTENT_LEVEL).any(1))}  # fmt: skip


def _extent(occupied: torch.Tensor) -> torch.Tensor:
    """Length from the first to the last True of each row of a bool ``[N, L]``; 0 for none."""
    length = occupied.shape[1]
    first = occupied.int().argmax(1)
    last = length - 1 - occupied.flip(1).int().argmax(1)
    return torch.where(occupied.any(1), last - first + 1, 0).float()


def size_extent(style: dict[str, torch.Tensor]) -> torch.Tensor:
    """The size a caption's "small"/"large" describe: the larger side of the bounding box, from :func:`measure_style`."""
    return torch.maximum(style["height"], style["width"])  # size is scale, not the shape of the digit


def classify_style(style: dict[str, torch.Tensor]) -> torch.Tensor:
    """Codes ``[N, 3]`` (thickness, slant, size) from :func:`measure_style`'s output; 0 where no word is sure."""
    thickness, slant = style["thickness"], style["slant"]
    extent = size_extent(style)
    codes = torch.zeros(len(thickness), 3, dtype=torch.int64)
    codes[(thickness > 0) & (thickness <= THIN_MAX_THICKNESS), 0] = 1  # thickness 0: no pixel above INK_LEVEL
    codes[thickness >= BOLD_MIN_THICKNESS, 0] = 2
    codes[slant <= -LEANING_MIN_SLANT, 1] = 1
    codes[slant.abs() <= UPRIGHT_MAX_SLANT, 1] = 2
    codes[slant >= LEANING_MIN_SLANT, 1] = 3
    codes[(extent > 0) & (extent <= SMALL_MAX_EXTENT), 2] = 1
    codes[extent >= LARGE_MIN_EXTENT, 2] = 2
    codes[extent == 0] = 0  # a blank image has no style
    return codes


def style_codes(images: torch.Tensor) -> torch.Tensor:
    """Codes ``[N, 3]`` of uint8 ``[N, H, W]`` images: :func:`classify_style` of :func:`measure_style`."""
    return classify_style(measure_style(images))


def style_words(codes: torch.Tensor) -> list[StyleWords]:
    """The (thickness, slant, size) words of codes ``[N, 3]``, None where a code is 0."""
    if codes.ndim != 2 or codes.shape[1] != 3:
        raise ValueError(f"style codes must have shape [N, 3], got {tuple(codes.shape)}")
    return [tuple(table[c] for table, c in zip(STYLE_WORD_TABLES, row)) for row in codes.tolist()]  # type: ignore[misc]


# -- phrasing ------------------------------------------------------------------------------------

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NOUNS = ("digit", "number", "numeral")  # before the digit: "the digit 7", "number seven"
DESCRIPTIONS = ("handwritten", "hand-drawn", "hand-written")  # true of every MNIST image
FRAMES = ("an image of", "a picture of", "a drawing of")  # then an article: "a drawing of the number 4"
AN_WORDS = frozenset({"eight", "8", "upright"})  # take "an": the only vowel sounds that can follow an article
# Each style word's phrasings: before the digit ("a bold 7") and after it ("a 7 with thick strokes").
STYLE_FORMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "thin": (("thin",), ("with thin strokes", "in thin lines")),
    "bold": (("bold", "thick"), ("with bold strokes", "with thick strokes", "in thick lines")),
    "leaning left": (("left-leaning",), ("leaning left", "leaning to the left", "slanting left", "tilted to the left")),
    "upright": (("upright",), ("standing upright",)),
    "leaning right": (("right-leaning",), ("leaning right", "leaning to the right", "slanting right", "tilted to the right")),
    "small": (("small", "little"), ()),
    "large": (("large", "big"), ()),
}  # fmt: skip
P_BEFORE = 0.6  # a style word with both phrasings goes before the digit this often
CASES = (("lower", 0.6), ("sentence", 0.25), ("title", 0.1), ("upper", 0.05))
ENDINGS = (("", 0.5), (".", 0.4), ("!", 0.1))


class CaptionGenerator:
    """Varied, true captions of a digit and its style words; all randomness comes from a ``random.Random``.

    Seed one ``random.Random`` per batch (e.g. ``random.Random(seed * 1_000_003 + step)``) and
    captions are reproducible, also across a resume. With probability ``p_empty`` the caption is
    "" (the unconditional case of classifier-free guidance, Ho & Salimans 2022); otherwise each
    true style word is mentioned with probability ``p_style``.
    """

    def __init__(self, *, p_empty: float = 0.1, p_style: float = 0.5) -> None:
        for name, p in (("p_empty", p_empty), ("p_style", p_style)):
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
                raise TinyDiffError(f"caption {name} must be a probability between 0 and 1, got {p!r}")
        self.p_empty = float(p_empty)
        self.p_style = float(p_style)

    def caption(self, label: int, words: StyleWords, rng: random.Random) -> str:
        """One caption of digit ``label`` with some of its true style ``words`` (thickness, slant, size)."""
        if not 0 <= int(label) <= 9:
            raise ValueError(f"label must be a digit 0-9, got {label!r}")
        if len(words) != 3 or any(w not in table for w, table in zip(words, STYLE_WORD_TABLES)):
            raise ValueError(f"words must be (thickness, slant, size) from the style word tables, got {words!r}")
        if rng.random() < self.p_empty:
            return ""
        # 1. the head: a digit word or numeral, sometimes after a noun ("the digit 7", "number seven")
        digit = str(label) if rng.random() < 0.5 else DIGIT_WORDS[label]
        head = f"{rng.choice(NOUNS)} {digit}" if rng.random() < 0.35 else digit
        # 2. the true style words mentioned, each placed before or after the head
        before, after = [], []
        for word in words:
            if word is None or rng.random() >= self.p_style:
                continue
            pre, post = STYLE_FORMS[word]
            if pre and (not post or rng.random() < P_BEFORE):
                before.append(rng.choice(pre))
            else:
                after.append(rng.choice(post))
        rng.shuffle(before)  # "a thin, small 3" and "a small thin 3"
        if any(b in STYLE_FORMS["upright"][0] for b in before):  # "upright" sits next to the digit
            before.sort(key=lambda b: b in STYLE_FORMS["upright"][0])
        phrase = (", " if len(before) > 1 and rng.random() < 0.3 else " ").join(before)
        if rng.random() < 0.3:
            phrase = f"{phrase} {rng.choice(DESCRIPTIONS)}"
        phrase = " ".join(part for part in (phrase.strip(), head, *after) if part)
        # 3. an article ("an" before a vowel sound), and sometimes a frame ("a picture of ...")
        framed = rng.random() < 0.15
        article = _choose(rng, (("a", 0.5), ("the", 0.25), ("", 0.25)))
        if article or framed:
            if article != "the":
                article = "an" if normalize(phrase)[0] in AN_WORDS else "a"
            phrase = f"{article} {phrase}"
        if framed:
            phrase = f"{rng.choice(FRAMES)} {phrase}"
        # 4. case and final punctuation
        return _recase(phrase, _choose(rng, CASES)) + _choose(rng, ENDINGS)

    def captions_for_batch(self, labels: torch.Tensor, codes: torch.Tensor, rng: random.Random) -> list[str]:
        """A caption per image of a batch: labels ``[N]`` and style codes ``[N, 3]`` from :func:`style_codes`."""
        if labels.ndim != 1 or len(labels) != len(codes):
            raise ValueError(f"labels [N] and codes [N, 3] must match, got {tuple(labels.shape)} and {tuple(codes.shape)}")
        return [self.caption(label, words, rng) for label, words in zip(labels.tolist(), style_words(codes))]


def _choose(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    """One of the options, drawn with the given weights (which sum to 1)."""
    r = rng.random()
    for option, weight in weighted:
        r -= weight
        if r < 0:
            return option
    return weighted[-1][0]


def _recase(text: str, case: str) -> str:
    if case == "sentence":
        return text[:1].upper() + text[1:]
    if case == "title":
        return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))
    return text.upper() if case == "upper" else text


def vocabulary() -> list[str]:
    """Every lowercase word a caption can contain, sorted: the vocabulary a tokenizer is built from."""
    phrases = [*DIGIT_WORDS, *(str(d) for d in range(10)), *NOUNS, *DESCRIPTIONS, *FRAMES, "a", "an", "the"]
    phrases += [form for pre, post in STYLE_FORMS.values() for form in (*pre, *post)]
    return sorted({word for phrase in phrases for word in normalize(phrase)})
