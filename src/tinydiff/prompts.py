"""Reading a prompt: the number it names, its style words, and the checks every caller of a model gets.

A prompt names one digit ("a bold seven") or a whole number of up to :data:`MAX_NUMBER_DIGITS`
digits, as a numeral ("42", "007", "the year 2026") or in English words up to 9,999
("forty-two", "nineteen eighty-four", "two thousand and twenty-six"); a number is drawn on a
wide canvas, one window per digit (:mod:`tinydiff.diffusion`, MultiDiffusion). The same rules
hold for ``tinydiff sample``, ``Pipeline.sample`` and evaluation: a prompt naming digits
separately ("a three and a seven"), a number too long, or two contradictory style words is a
:class:`TinyDiffError`; one naming no digit, or words the model does not know, is a
:class:`PromptWarning` (the command line prints it as a ``warning:`` line).
"""

from __future__ import annotations

import warnings
from typing import Any

from .captions import AN_WORDS, DIGIT_WORDS, STYLE_ATTRIBUTES, STYLE_FORMS, STYLE_WORD_TABLES
from .errors import TinyDiffError
from .nn.text import normalize


class PromptWarning(UserWarning):
    """A prompt will be sampled, but not quite as written (no digit named, unknown words, too long)."""


_DIGIT_OF_WORD = {word: d for d, word in enumerate(DIGIT_WORDS)}
_STYLE_PHRASES = sorted(
    ((tuple(normalize(form)), word) for word, (pre, post) in STYLE_FORMS.items() for form in (*pre, *post)),
    key=lambda item: -len(item[0]),
)  # longest first, so "leaning to the left" wins over any shorter phrase inside it


def digits_in_prompt(prompt: str) -> set[int]:
    """Digits a prompt names: digit words and numerals, any case, plurals too ("sevens", "7s").

    A numeral of several digits names each of them ("12" -> {1, 2}), since the model draws one
    digit. "one" always counts as 1 ("a thin one" -> {1}).
    """
    digits: set[int] = set()
    for token in normalize(prompt):
        for stem in (token, token[:-1] if token.endswith("s") else "", token[:-2] if token.endswith("es") else ""):
            if stem in _DIGIT_OF_WORD:
                digits.add(_DIGIT_OF_WORD[stem])
                break
            if stem.isascii() and stem.isdigit():
                digits.update(int(c) for c in stem)
                break
    return digits


def style_in_prompt(prompt: str) -> dict[str, str | None]:
    """The style word a prompt asks for per attribute (thickness, slant, size), None where it names none.

    Phrases are those captions use ("thick" and "with bold strokes" -> "bold"); negation is not
    understood. A prompt naming two words of one attribute ("thin and bold") is a TinyDiffError.
    """
    tokens = normalize(prompt)
    found: dict[str, str | None] = dict.fromkeys(STYLE_ATTRIBUTES)
    i = 0
    while i < len(tokens):
        for phrase, word in _STYLE_PHRASES:
            if tuple(tokens[i : i + len(phrase)]) == phrase:
                attribute = next(a for a, table in zip(STYLE_ATTRIBUTES, STYLE_WORD_TABLES) if word in table)
                if found[attribute] not in (None, word):
                    raise TinyDiffError(f"the prompt asks for both {found[attribute]!r} and {word!r}; keep one")
                found[attribute] = word
                i += len(phrase)
                break
        else:
            i += 1
    return found


def clean_prompt(prompt: str) -> str:
    """Control characters dropped and runs of whitespace made one space."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in prompt).split())


MAX_NUMBER_DIGITS = 8  # a canvas of 8 digits is 182 pixels wide: a phone number, a date; sampling cost grows with it
MAX_NUMBER_WORDS = 9_999  # English number words are read up to this; larger numbers are written as numerals

_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SMALL_WORDS = {**_DIGIT_OF_WORD, **{w: 10 + i for i, w in enumerate(_TEENS)}, **_TENS}
_SCALES = {"hundred": 100, "thousand": 1000}
_YEAR_ZERO = ("oh", "o")  # "nineteen oh five": 1905


def _unit(token: str) -> int | None:
    """The digit a digit word names, plurals too ("sevens", "sixes"); None for any other word."""
    for stem in (token, token[:-1] if token.endswith("s") else "", token[:-2] if token.endswith("es") else ""):
        if stem in _DIGIT_OF_WORD:
            return _DIGIT_OF_WORD[stem]
    return None


def _numeral(token: str) -> str | None:
    """The digits of a numeral token, plurals too ("7s", "1980s"); None for a word."""
    stem = token[:-1] if token.endswith("s") else token
    return stem if stem.isascii() and stem.isdigit() else None


def _small(tokens: list[str], i: int) -> tuple[int, int] | None:
    """A number below 100 in words at ``tokens[i]`` ("seven", "twelve", "forty two"), and the index after it."""
    if i >= len(tokens):
        return None
    word = tokens[i]
    if word in _TENS:
        unit = _DIGIT_OF_WORD.get(tokens[i + 1]) if i + 1 < len(tokens) else None
        return (_TENS[word] + unit, i + 2) if unit else (_TENS[word], i + 1)
    if word in _SMALL_WORDS:
        return _SMALL_WORDS[word], i + 1
    unit = _unit(word)
    return (unit, i + 1) if unit is not None else None


def _after_and(tokens: list[str], i: int) -> tuple[int, int] | None:
    """A number below 100 at ``tokens[i]``, after an optional "and" ("one hundred and five")."""
    if i < len(tokens) and tokens[i] == "and":
        return _small(tokens, i + 1)
    return _small(tokens, i)


def _words_number(tokens: list[str], i: int) -> tuple[int, int] | None:
    """A number in English words at ``tokens[i]``, up to "ninety-nine thousand ...", and the index after it.

    number := [small "thousand"] [["and"] small "hundred"] [["and"] small], at least one part;
    "a hundred" and "a thousand" count as one.
    """
    if tokens[i] == "a" and i + 1 < len(tokens) and tokens[i + 1] in _SCALES:
        first: tuple[int, int] | None = (1, i + 1)
    else:
        first = _small(tokens, i)
    if first is None:
        return None
    value, j = first
    if j < len(tokens) and tokens[j] == "thousand":
        total, j = value * 1000, j + 1
        part = _after_and(tokens, j)
        if part is None:
            return total, j
        value, k = part
        if k < len(tokens) and tokens[k] == "hundred":
            total, j = total + value * 100, k + 1
            part = _after_and(tokens, j)
            return (total + part[0], part[1]) if part else (total, j)
        return total + value, k
    if j < len(tokens) and tokens[j] == "hundred":
        total, j = value * 100, j + 1
        part = _after_and(tokens, j)
        return (total + part[0], part[1]) if part else (total, j)
    return value, j


def _number_phrases(tokens: list[str]) -> list[tuple[str, int, int, bool]]:
    """Every number a prompt's words name, in order: (digits, first token, index after, written in words)."""
    found: list[tuple[str, int, int, bool]] = []
    i = 0
    while i < len(tokens):
        numeral = _numeral(tokens[i])
        if numeral is not None:
            found.append((numeral, i, i + 1, False))
            i += 1
            continue
        words = _words_number(tokens, i)
        if words is None:
            i += 1
            continue
        value, end = words
        if value > MAX_NUMBER_WORDS:
            raise TinyDiffError(
                f"number words go up to {MAX_NUMBER_WORDS:,}, and {' '.join(tokens[i:end])!r} is {value:,}; "
                f"write it as a numeral, e.g. 'the number {value}'"
            )
        found.append((str(value), i, end, True))
        i = end
    return found


def _merge_years(tokens: list[str], phrases: list[tuple[str, int, int, bool]]) -> list[tuple[str, int, int, bool]]:
    """Years said in two halves become one number: "nineteen eighty-four" 1984, "twenty twenty" 2020, "nineteen oh five" 1905."""
    merged: list[tuple[str, int, int, bool]] = []
    for digits, start, end, in_words in phrases:
        if merged and in_words:
            prev_digits, prev_start, prev_end, prev_words = merged[-1]
            two_halves = prev_words and len(prev_digits) == 2 and prev_end == start and len(digits) == 2
            oh = (prev_words and len(prev_digits) == 2 and start == prev_end + 1 and tokens[prev_end] in _YEAR_ZERO
                  and len(digits) == 1 and digits != "0")  # fmt: skip
            if two_halves or oh:
                merged[-1] = (prev_digits + digits.rjust(2, "0"), prev_start, end, True)
                continue
        merged.append((digits, start, end, in_words))
    return merged


def number_in_prompt(prompt: str) -> str | None:
    """The number a prompt names, as its digits ("a bold seven" -> "7", "the year 2026" -> "2026"); None for none.

    Numerals keep their leading zeros ("007"); words are read up to 9,999, years in two halves
    too ("nineteen eighty-four"). "one" always counts as 1 ("a thin one" -> "1"). Digits named
    separately ("a three and a seven") and numbers of more than :data:`MAX_NUMBER_DIGITS` digits
    are a :class:`TinyDiffError` that says what to write instead.
    """
    tokens = normalize(prompt)
    phrases = _merge_years(tokens, _number_phrases(tokens))
    if not phrases:
        return None
    shown = clean_prompt(prompt)[:60]
    if len({digits for digits, *_ in phrases}) == 1 and len(phrases[0][0]) == 1:
        return phrases[0][0]  # one digit named twice ("sevens and 7s"), as before numbers were read
    if len(phrases) > 1:
        named = [digits for digits, *_ in phrases]
        listed = ", ".join(named[:-1]) + " and " + named[-1]
        joined = "".join(named)
        hint = (f"did you mean 'the number {joined}'?" if len(joined) <= MAX_NUMBER_DIGITS
                else "ask for one number per prompt (or use --prompts-file, one prompt a line)")  # fmt: skip
        raise TinyDiffError(f"prompt {shown!r} names {listed} separately; an image holds one number: {hint}")
    digits = phrases[0][0]
    if len(digits) > MAX_NUMBER_DIGITS:
        raise TinyDiffError(
            f"prompt {shown!r} names a number of {len(digits)} digits; numbers have at most {MAX_NUMBER_DIGITS} digits"
        )
    return digits


def digit_prompt(digit: int, style: dict[str, str | None]) -> str:
    """The single-digit prompt for one window of a number: the digit and the number's style words, as captions phrase them."""
    before = [style.get("thickness"), style.get("size"), "upright" if style.get("slant") == "upright" else None]
    after = style.get("slant") if style.get("slant") in ("leaning left", "leaning right") else None
    phrase = " ".join(w for w in (*before, "handwritten", DIGIT_WORDS[digit], after) if w)
    return f"{'an' if phrase.split()[0] in AN_WORDS else 'a'} {phrase}"


def window_prompts(prompt: str) -> list[str] | None:
    """One prompt per digit of the number ``prompt`` names, each with its style words; None unless it names 2 digits or more.

    "a bold 250 leaning right" -> ["a bold handwritten two leaning right", "... five ...", "... zero ..."].
    """
    digits = number_in_prompt(prompt)
    if digits is None or len(digits) < 2:
        return None
    style = style_in_prompt(prompt)
    return [digit_prompt(int(d), style) for d in digits]


def check_prompt(prompt: str, tokenizer: Any = None) -> str:
    """The prompt actually sampled from: cleaned, and "" (unconditional) when it names no digit.

    Digits named separately, a number too long or contradictory style words are a
    :class:`TinyDiffError`; a prompt naming no digit, words outside ``tokenizer``'s vocabulary
    and a prompt longer than the text encoder reads are each a :class:`PromptWarning`. A
    prompt naming a number of several digits is sampled one window per digit
    (:func:`window_prompts`): its own words are checked against the vocabulary, less the
    number words, which the windows spell digit by digit.
    """
    if not isinstance(prompt, str):
        raise TinyDiffError(f"a prompt must be a string, got {type(prompt).__name__}")
    cleaned = clean_prompt(prompt)
    style_in_prompt(cleaned)  # contradictions such as "thin and bold" are an error
    number = number_in_prompt(cleaned)
    if cleaned and number is None:
        warnings.warn(f"prompt {cleaned[:60]!r} names no digit; sampling unconditionally", PromptWarning, stacklevel=3)
        return ""
    if tokenizer is not None and cleaned:
        batch = tokenizer.encode([cleaned])
        unknown = batch.unknown[0]
        if number is not None and len(number) > 1:  # the windows' prompts spell the number; "year" and the like are not read
            unknown = [w for w in unknown if not _is_number_word(w) and w not in _NUMBER_NOUNS]
        if unknown:
            words = ", ".join(unknown[:10])
            warnings.warn(f"unknown words, read as an unknown token: {words}", PromptWarning, stacklevel=3)
        if batch.truncated[0] and (number is None or len(number) == 1):
            warnings.warn(f"prompt is longer than the text encoder's {tokenizer.max_length - 1} words; the rest is ignored",
                          PromptWarning, stacklevel=3)  # fmt: skip
    return cleaned


_NUMBER_NOUNS = frozenset({"year", "years", "numbers", "digits", "code", "page", "room"})  # "the year 2026": words only a number prompt uses


def _is_number_word(word: str) -> bool:
    return (word in _SMALL_WORDS or word in _SCALES or word in _YEAR_ZERO or word == "and"
            or _unit(word) is not None or _numeral(word) is not None)  # fmt: skip
