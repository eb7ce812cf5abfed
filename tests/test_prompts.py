"""tinydiff.prompts: the digit and style words a prompt names, and the checks every sampler caller gets."""

from __future__ import annotations

import warnings

import pytest

from tinydiff.errors import TinyDiffError
from tinydiff.nn.text import Tokenizer
from tinydiff.prompts import (
    MAX_NUMBER_DIGITS,
    PromptWarning,
    check_prompt,
    digits_in_prompt,
    number_in_prompt,
    style_in_prompt,
    window_prompts,
)


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
    [("a 3 or a five", "names 3 and 5 separately"), ("a thin, bold 7", "'thin' and 'bold'"), (7, "must be a string")],
)
def test_check_prompt_refuses_what_cannot_be_drawn(prompt, match: str) -> None:
    with pytest.raises(TinyDiffError, match=match):
        check_prompt(prompt)


# -- whole numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, number",
    [
        ("a handwritten seven", "7"),  # single digits as before
        ("the digit 7", "7"),
        ("a thin one", "1"),
        ("sevens and 7s", "7"),  # one digit named twice is still that digit
        ("zero", "0"),
        ("a cat", None),
        ("", None),
        ("42", "42"),  # numerals, leading zeros kept
        ("007", "007"),
        ("the year 2026", "2026"),
        ("the 1980s", "1980"),
        ("12345678", "12345678"),
        ("forty-two", "42"),  # English words up to 9,999
        ("Forty Two!", "42"),
        ("twelve", "12"),
        ("one hundred and five", "105"),
        ("a hundred", "100"),
        ("seven hundred", "700"),
        ("one thousand", "1000"),
        ("two thousand and twenty-six", "2026"),
        ("two thousand twenty six", "2026"),
        ("nine thousand nine hundred and ninety-nine", "9999"),
        ("nineteen hundred and eighty-four", "1984"),
        ("nineteen eighty-four", "1984"),  # years said in two halves
        ("twenty twenty", "2020"),
        ("nineteen oh five", "1905"),
        ("a bold 250 leaning right", "250"),
    ],
)
def test_number_in_prompt(prompt: str, number: str | None) -> None:
    assert number_in_prompt(prompt) == number


@pytest.mark.parametrize(
    "prompt, match",
    [
        ("a three and a seven", "names 3 and 7 separately; an image holds one number: did you mean 'the number 37'?"),
        ("an 8, not a three", "did you mean 'the number 83'?"),
        ("12 and thirty-four", "names 12 and 34 separately.*'the number 1234'"),
        ("1234 5678 9", "ask for one number per prompt"),  # joined it would be too long to suggest
        ("123456789", f"names a number of 9 digits; numbers have at most {MAX_NUMBER_DIGITS} digits"),
        ("ten thousand", "number words go up to 9,999.*'the number 10000'"),
    ],
)
def test_number_in_prompt_refuses_what_is_not_one_number(prompt: str, match: str) -> None:
    with pytest.raises(TinyDiffError, match=match):
        number_in_prompt(prompt)
    with pytest.raises(TinyDiffError, match=match):
        check_prompt(prompt)


def test_window_prompts_spell_the_number_with_its_style_words() -> None:
    assert window_prompts("a bold 250 leaning right") == [
        "a bold handwritten two leaning right", "a bold handwritten five leaning right", "a bold handwritten zero leaning right"
    ]  # fmt: skip
    assert window_prompts("a small upright forty-two with thin strokes") == [
        "a thin small upright handwritten four", "a thin small upright handwritten two"
    ]  # fmt: skip
    assert window_prompts("the year 2026") == ["a handwritten two", "a handwritten zero", "a handwritten two", "a handwritten six"]
    assert window_prompts("a bold seven") is None and window_prompts("a cat") is None  # one digit: the prompt itself
    with pytest.raises(TinyDiffError, match="'thin' and 'bold'"):
        window_prompts("a thin bold 42")


def test_number_prompts_are_checked_as_their_windows_read_them() -> None:
    from tinydiff.captions import vocabulary

    tok = Tokenizer(vocabulary(), max_length=6)
    assert caught(check_prompt, "the year 2026", tok) == ("the year 2026", [])  # "year" names the number; not a warning
    assert caught(check_prompt, "nineteen eighty-four, in thin lines", tok) == ("nineteen eighty-four, in thin lines", [])
    assert caught(check_prompt, "a purple 42", tok)[1] == ["unknown words, read as an unknown token: purple"]
