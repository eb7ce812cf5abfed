"""Property-based tests (hypothesis): the tokenizer, the prompt parser and the config models never misbehave."""

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tinydiff.captions import DIGIT_WORDS, vocabulary
from tinydiff.prompts import digits_in_prompt
from tinydiff.config import Config, ModelConfig, TrainConfig
from tinydiff.errors import TinyDiffError
from tinydiff.nn.text import Tokenizer, normalize

TOKENIZER = Tokenizer(vocabulary(), max_length=16)
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NON_DIGIT_WORDS = [w for w in vocabulary() if w not in DIGIT_WORDS and not w.isdigit() and w not in ("an",)]


@FAST
@given(st.text())
def test_tokenizer_accepts_any_text(text: str) -> None:
    batch = TOKENIZER.encode([text])
    ids, mask = batch.ids[0], batch.mask[0]
    assert ids.shape == (16,) and bool(mask[0]) and int(ids[0]) == 2, "always starts with <bos>"
    assert int(ids.max()) < TOKENIZER.vocab_size and int(ids.min()) >= 0
    real = int(mask.sum())
    assert mask[:real].all() and not mask[real:].any(), "real tokens first, then padding"
    assert (ids[real:] == 0).all()
    assert batch.truncated[0] == (len(normalize(text)) > 15)


@FAST
@given(st.text(alphabet=string.printable))
def test_tokenizer_ignores_case_and_punctuation(text: str) -> None:
    a = TOKENIZER.encode([text.lower()])
    b = TOKENIZER.encode([text.upper().replace(" ", " , ")])
    assert a.ids.tolist() == b.ids.tolist()


@FAST
@given(st.text())
def test_normalize_is_idempotent(text: str) -> None:
    words = normalize(text)
    assert normalize(" ".join(words)) == words
    assert all(w == w.lower() and w for w in words)


@FAST
@given(st.text())
def test_prompt_parser_never_crashes(text: str) -> None:
    digits = digits_in_prompt(text)
    assert digits <= set(range(10))


@FAST
@given(
    st.integers(0, 9),
    st.lists(st.sampled_from(NON_DIGIT_WORDS), max_size=6),
    st.lists(st.sampled_from(NON_DIGIT_WORDS), max_size=6),
    st.booleans(),
    st.sampled_from(["", ".", "!", ",", "?"]),
)
def test_prompt_parser_finds_the_one_digit(digit, before, after, as_word, punctuation) -> None:
    name = DIGIT_WORDS[digit] if as_word else str(digit)
    prompt = " ".join([*before, name.title() if before else name, *after]) + punctuation
    assert digits_in_prompt(prompt) == {digit}


scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True), st.text(max_size=5))


@FAST
@given(st.dictionaries(st.sampled_from(list(TrainConfig.model_fields) + ["bogus"]), scalars, max_size=6))
def test_train_config_validates_or_explains(values: dict) -> None:
    try:
        cfg = TrainConfig.model_validate(values)
    except ValidationError:
        return
    assert cfg.steps > 0 and cfg.batch_size > 0 and cfg.lr > 0
    assert TrainConfig.model_validate(cfg.model_dump()) == cfg


@FAST
@given(st.dictionaries(st.sampled_from(list(ModelConfig.model_fields) + ["bogus"]), scalars, max_size=6))
def test_model_config_validates_or_explains(values: dict) -> None:
    try:
        cfg = ModelConfig.model_validate(values)
    except ValidationError:
        return
    assert Config.model_validate({"model": cfg.model_dump()}).model == cfg


@pytest.mark.parametrize("word", ["Seven", "two words", ""])
def test_vocabulary_words_must_be_single_lowercase_words(word: str) -> None:
    with pytest.raises(TinyDiffError):
        Tokenizer([word])
