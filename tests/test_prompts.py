"""tinydiff.prompts: the digit and style words a prompt names, and the checks every sampler caller gets."""

from __future__ import annotations

import warnings

import pytest

from tinydiff.errors import TinyDiffError
from tinydiff.nn.text import Tokenizer
from tinydiff.prompts import PromptWarning, check_prompt, digits_in_prompt, style_in_prompt

@pytest.mark.parametrize(
    "prompt, digits",
    [
        ("a handwritten seven", {7}),
        ("Seven.", {7}),
        ("the digit 7", {7}),
        ("SEVEN!", {7}),
        ("a bold Seven leaning right", {7}),
        ("a cat", set()),
        ("someone, alone, in tone", set()),
        ("a 3 or a five", {3, 5}),
        ("sevens and 7s", {7}),
        ("sixes", {6}),
        ("12", {1, 2}),
        ("an eight, not a 3", {8, 3}),
        ("", set()),
    ],
)
def test_digits_in_prompt(prompt: str, digits: set[int]) -> None:
    assert digits_in_prompt(prompt) == digits


@pytest.mark.parametrize(
    "prompt, thickness, slant, size",
    [
        ("a bold seven leaning right", "bold", "leaning right", None),
        ("A Thin, Small 3.", "thin", None, "small"),
        ("a large upright digit 4", None, "upright", "large"),
        ("a right-leaning 7", None, "leaning right", None),
        ("THE 2 LEANING TO THE LEFT WITH THICK STROKES!", "bold", "leaning left", None),
        ("a big 9 tilted to the right", None, "leaning right", "large"),
        ("a seven to the right", None, None, None),
        ("a cat", None, None, None),
    ],
)
def test_style_in_prompt(prompt: str, thickness: str | None, slant: str | None, size: str | None) -> None:
    assert style_in_prompt(prompt) == {"thickness": thickness, "slant": slant, "size": size}


def test_style_in_prompt_refuses_contradictions() -> None:
    with pytest.raises(TinyDiffError, match="'thin' and 'bold'"):
        style_in_prompt("a thin, bold 7")
    with pytest.raises(TinyDiffError, match="leaning"):
        style_in_prompt("a 7 leaning left and leaning right")
    assert style_in_prompt("a bold 7 with thick strokes")["thickness"] == "bold"  # two phrasings, one word


def caught(fn, *args):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = fn(*args)
    return result, [str(w.message) for w in seen if issubclass(w.category, PromptWarning)]


def test_check_prompt_cleans_and_passes_a_good_prompt_silently() -> None:
    tok = Tokenizer(["a", "bold", "seven"], max_length=6)
    assert caught(check_prompt, "  a\tbold\x00 seven ", tok) == ("a bold seven", [])
    assert caught(check_prompt, "", tok) == ("", [])


def test_check_prompt_warns_about_no_digit_unknown_words_and_length() -> None:
    tok = Tokenizer(["a", "seven"], max_length=4)
    assert caught(check_prompt, "a cat", tok) == ("", ["prompt 'a cat' names no digit; sampling unconditionally"])
    assert caught(check_prompt, "a purple seven", tok)[1] == ["unknown words, read as an unknown token: purple"]
    assert caught(check_prompt, "a a a a seven", tok)[1] == ["prompt is longer than the text encoder's 3 words; the rest is ignored"]


@pytest.mark.parametrize(
    "prompt, match",
    [("a 3 or a five", "names the digits 3, 5"), ("a thin, bold 7", "'thin' and 'bold'"), (7, "must be a string")],
)
def test_check_prompt_refuses_what_cannot_be_drawn(prompt, match: str) -> None:
    with pytest.raises(TinyDiffError, match=match):
        check_prompt(prompt)
