"""tinydiff.captions: style measured from pixels, true style words, varied captions (read back by tinydiff.prompts)."""

from __future__ import annotations

import random
import re

import pytest
import torch
import torch.nn.functional as F

from tinydiff import captions
from tinydiff.captions import (
    CaptionGenerator,
    classify_style,
    measure_style,
    style_codes,
    style_words,
    vocabulary,
)
from tinydiff.data import load_mnist
from tinydiff.errors import TinyDiffError
from tinydiff.prompts import digits_in_prompt, style_in_prompt

WORDS = re.compile(r"[^\W_]+")


def bar(width: int, height: int = 20, *, shear: float = 0.0) -> torch.Tensor:
    """A white bar on black, 28x28, centred; ``shear`` > 0 moves its top to the right."""
    image = torch.zeros(28, 28, dtype=torch.uint8)
    top = (28 - height) // 2
    for y in range(top, top + height):
        centre = 14 + shear * ((top + top + height - 1) / 2 - y)
        left = round(centre - width / 2)
        image[y, left : left + width] = 255
    return image


def words_of(image: torch.Tensor) -> captions.StyleWords:
    return style_words(style_codes(image[None]))[0]


@pytest.fixture(scope="module")
def mnist(data_dir) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_mnist(data_dir, split="train", download=False)
    return images[:5000], labels[:5000]


# -- measuring style on synthetic strokes --------------------------------------------------------


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 6])
def test_thickness_of_a_bar_is_its_width(width: int) -> None:
    thickness = measure_style(bar(width)[None])["thickness"].item()
    assert abs(thickness - width) <= 1, thickness


def test_thick_bar_is_bold_thin_bar_is_thin() -> None:
    assert words_of(bar(6))[0] == "bold"
    assert words_of(bar(1))[0] == "thin"
    assert words_of(bar(2))[0] == "thin"
    assert words_of(bar(3))[0] is None  # between the quartiles: no word


def test_slant_sign_follows_the_top_of_the_stroke() -> None:
    right = bar(3, shear=0.4)
    left = right.flip(-1)
    slant = measure_style(torch.stack([right, left, bar(3)]))["slant"]
    assert slant[0] == pytest.approx(0.4, abs=0.05)
    assert slant[1] == pytest.approx(-0.4, abs=0.05)
    assert slant[2] == pytest.approx(0.0, abs=1e-6)
    assert words_of(right)[1] == "leaning right"
    assert words_of(left)[1] == "leaning left"
    assert words_of(bar(3))[1] == "upright"


def test_slightly_slanted_bar_gets_no_slant_word() -> None:
    middle = (captions.UPRIGHT_MAX_SLANT + captions.LEANING_MIN_SLANT) / 2
    assert words_of(bar(3, shear=middle))[1] is None
    assert words_of(bar(3, shear=-middle))[1] is None


def test_short_bar_is_small_tall_bar_is_large() -> None:
    style = measure_style(torch.stack([bar(3, 8), bar(3, 24), bar(3, 20)]))
    assert style["height"].tolist() == [8, 24, 20]
    assert words_of(bar(3, 8))[2] == "small"
    assert words_of(bar(3, 24))[2] == "large"
    assert words_of(bar(3, 20))[2] is None  # MNIST's usual size


def test_blank_image_measures_zero_and_has_no_style() -> None:
    style = measure_style(torch.zeros(2, 28, 28, dtype=torch.uint8))
    for name in ("thickness", "slant", "height", "width"):
        assert style[name].tolist() == [0.0, 0.0], name
    assert style_codes(torch.zeros(1, 28, 28, dtype=torch.uint8)).tolist() == [[0, 0, 0]]


def test_measure_style_takes_uint8_images_only() -> None:
    with pytest.raises(TinyDiffError, match="uint8"):
        measure_style(torch.zeros(2, 28, 28))
    with pytest.raises(TinyDiffError, match="uint8"):
        measure_style(torch.zeros(28, 28, dtype=torch.uint8))
    assert measure_style(torch.zeros(0, 28, 28, dtype=torch.uint8))["slant"].shape == (0,)


def test_thresholds_leave_ambiguous_bands() -> None:
    assert captions.THIN_MAX_THICKNESS < captions.BOLD_MIN_THICKNESS
    assert 0 < captions.UPRIGHT_MAX_SLANT < captions.LEANING_MIN_SLANT
    assert captions.SMALL_MAX_EXTENT < 20 < captions.LARGE_MIN_EXTENT  # 20: MNIST's box


# -- style words on real MNIST -------------------------------------------------------------------


def test_thickness_and_slant_words_are_common_but_not_universal(mnist) -> None:
    codes = style_codes(mnist[0])
    for column, code, word in [(0, 1, "thin"), (0, 2, "bold"), (1, 1, "leaning left"), (1, 2, "upright"), (1, 3, "leaning right")]:  # fmt: skip
        fraction = (codes[:, column] == code).double().mean().item()
        assert 0.08 <= fraction <= 0.45, (word, fraction)


def test_thin_and_bold_groups_differ_clearly(mnist) -> None:
    style = measure_style(mnist[0])
    codes = classify_style(style)
    thin = style["thickness"][codes[:, 0] == 1].mean()
    bold = style["thickness"][codes[:, 0] == 2].mean()
    assert bold - thin > 1.0, (thin, bold)


def test_raw_mnist_has_no_size_words_rescaled_digits_do(mnist) -> None:
    images = mnist[0][:500]
    assert (style_codes(images)[:, 2] != 0).double().mean() < 0.01  # every digit fills a 20-pixel box
    x = images[:, None].float()
    small = F.pad(F.interpolate(x, size=16, mode="bilinear", antialias=True), (6, 6, 6, 6))
    large = F.interpolate(x, size=34, mode="bilinear")[..., 3:31, 3:31]
    for scaled, code in [(small, 1), (large, 2)]:
        codes = style_codes(scaled[:, 0].round().clamp(0, 255).to(torch.uint8))
        assert (codes[:, 2] == code).double().mean() > 0.95


# -- the caption generator -----------------------------------------------------------------------


def random_examples(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and codes drawn uniformly, every style word included."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    codes = torch.stack([torch.randint(0, len(t), (n,), generator=g) for t in captions.STYLE_WORD_TABLES], 1)
    return labels, codes


def test_captions_cover_digit_words_numerals_and_style_words() -> None:
    labels, codes = random_examples(3000)
    texts = CaptionGenerator().captions_for_batch(labels, codes, random.Random(0))
    tokens = {w for t in texts for w in WORDS.findall(t.lower())}
    assert set(captions.DIGIT_WORDS) <= tokens
    assert {str(d) for d in range(10)} <= tokens
    named = {v for t in texts for v in style_in_prompt(t).values()}
    assert named == {None, "thin", "bold", "leaning left", "upright", "leaning right", "small", "large"}
    lowered = [t.lower() for t in texts]
    assert any(t.startswith(("an eight", "an 8")) for t in lowered)
    for prefix in ("the digit ", "number ", "a handwritten ", "a hand-drawn "):
        assert any(prefix in t for t in lowered), prefix
    assert any(t.isupper() for t in texts) and any(t.endswith("!") for t in texts) and any(t.endswith(".") for t in texts)


def test_articles_agree_with_the_next_word() -> None:
    labels, codes = random_examples(3000, seed=1)
    for text in CaptionGenerator(p_empty=0.0).captions_for_batch(labels, codes, random.Random(1)):
        words = WORDS.findall(text.lower())
        for article, following in zip(words, words[1:]):
            if article in ("a", "an"):
                vowel_sound = (following[0] in "aeiou" and following != "one") or following == "8"
                assert (article == "an") == vowel_sound, text


def test_empty_caption_at_about_p_empty() -> None:
    labels, codes = random_examples(4000, seed=2)
    texts = CaptionGenerator(p_empty=0.1).captions_for_batch(labels, codes, random.Random(2))
    empty = sum(t == "" for t in texts)
    assert abs(empty - 400) < 4 * (4000 * 0.1 * 0.9) ** 0.5  # binomial, 4 standard deviations
    assert "" not in CaptionGenerator(p_empty=0.0).captions_for_batch(labels, codes, random.Random(2))


def test_true_style_words_are_sometimes_said_and_sometimes_not() -> None:
    labels = torch.full((2000,), 7)
    codes = torch.tensor([[2, 3, 2]]).repeat(2000, 1)  # bold, leaning right, large
    texts = CaptionGenerator(p_empty=0.0, p_style=0.5).captions_for_batch(labels, codes, random.Random(3))
    for attribute, word in [("thickness", "bold"), ("slant", "leaning right"), ("size", "large")]:
        said = sum(style_in_prompt(t)[attribute] == word for t in texts) / len(texts)
        assert 0.44 < said < 0.56, (word, said)


def test_same_seed_same_captions() -> None:
    labels, codes = random_examples(200, seed=4)
    gen = CaptionGenerator()
    first = gen.captions_for_batch(labels, codes, random.Random(42))
    assert first == gen.captions_for_batch(labels, codes, random.Random(42))
    assert first != gen.captions_for_batch(labels, codes, random.Random(43))


def test_captions_of_real_images_say_only_true_things(mnist) -> None:
    images, labels = mnist
    codes = style_codes(images)
    texts = CaptionGenerator().captions_for_batch(labels, codes, random.Random(5))
    for text, label, words in zip(texts, labels.tolist(), style_words(codes)):
        if text == "":
            continue
        assert digits_in_prompt(text) == {label}, text
        for attribute, true_word in zip(captions.STYLE_ATTRIBUTES, words):
            assert style_in_prompt(text)[attribute] in (None, true_word), (text, words)


def test_every_caption_word_is_in_the_vocabulary() -> None:
    vocab = vocabulary()
    assert vocab == sorted(set(vocab))
    assert all(WORDS.findall(w) == [w] and w == w.lower() for w in vocab)
    assert {"hand", "drawn", "an", "seven", "7", "leaning", "right"} <= set(vocab)
    labels, codes = random_examples(3000, seed=6)
    texts = CaptionGenerator().captions_for_batch(labels, codes, random.Random(6))
    used = {w for t in texts for w in WORDS.findall(t.lower())}
    assert used <= set(vocab), used - set(vocab)
    assert max(len(WORDS.findall(t)) for t in texts) <= 15  # fits a tokenizer of max_length 16 with <bos>


def test_generator_rejects_bad_settings_and_inputs() -> None:
    with pytest.raises(TinyDiffError, match="p_empty"):
        CaptionGenerator(p_empty=1.5)
    with pytest.raises(TinyDiffError, match="p_style"):
        CaptionGenerator(p_style=-0.1)
    gen = CaptionGenerator()
    with pytest.raises(ValueError):
        gen.caption(10, (None, None, None), random.Random(0))
    with pytest.raises(ValueError):
        gen.caption(3, ("heavy", None, None), random.Random(0))
    with pytest.raises(ValueError):
        gen.captions_for_batch(torch.tensor([1, 2]), torch.zeros(3, 3, dtype=torch.long), random.Random(0))
