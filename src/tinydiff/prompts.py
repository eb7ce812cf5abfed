"""Reading a prompt: the digit it names, its style words, and the checks every caller of a model gets.

The same rules hold for ``tinydiff sample``, ``Pipeline.sample`` and evaluation: a prompt
naming two digits or two contradictory style words is a :class:`TinyDiffError`; one naming
no digit, or words the model does not know, is a :class:`PromptWarning` (the command line
prints it as a ``warning:`` line).
"""

from __future__ import annotations

import warnings
from typing import Any

from .captions import DIGIT_WORDS, STYLE_ATTRIBUTES, STYLE_FORMS, STYLE_WORD_TABLES
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


def check_prompt(prompt: str, tokenizer: Any = None) -> str:
    """The prompt actually sampled from: cleaned, and "" (unconditional) when it names no digit.

    Two digits or contradictory style words are a :class:`TinyDiffError`; a prompt naming no
    digit, words outside ``tokenizer``'s vocabulary and a prompt longer than the text encoder
    reads are each a :class:`PromptWarning`.
    """
    if not isinstance(prompt, str):
        raise TinyDiffError(f"a prompt must be a string, got {type(prompt).__name__}")
    cleaned = clean_prompt(prompt)
    style_in_prompt(cleaned)  # contradictions such as "thin and bold" are an error
    digits = sorted(digits_in_prompt(cleaned))
    if len(digits) > 1:
        raise TinyDiffError(
            f"prompt {cleaned[:60]!r} names the digits {', '.join(map(str, digits))}; an image holds one digit, "
            "so ask for one (or use --prompts-file, one prompt a line)"
        )
    if cleaned and not digits:
        warnings.warn(f"prompt {cleaned[:60]!r} names no digit; sampling unconditionally", PromptWarning, stacklevel=3)
        return ""
    if tokenizer is not None and cleaned:
        batch = tokenizer.encode([cleaned])
        if batch.unknown[0]:
            words = ", ".join(batch.unknown[0][:10])
            warnings.warn(f"unknown words, read as an unknown token: {words}", PromptWarning, stacklevel=3)
        if batch.truncated[0]:
            warnings.warn(f"prompt is longer than the text encoder's {tokenizer.max_length - 1} words; the rest is ignored",
                          PromptWarning, stacklevel=3)  # fmt: skip
    return cleaned
