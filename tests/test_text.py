"""The tokenizer and the text encoder: normalisation, vocab.json, masking, registration."""

import json

import pytest
import torch

from tinydiff.checkpoint import read_tokenizer
from tinydiff.errors import TinyDiffError
from tinydiff.nn import text
from tinydiff.nn.text import BOS_ID, PAD_ID, UNK_ID, TinyTextEncoder, Tokenizer, normalize
from tinydiff.plugins import PluginHost

WORDS = ["a", "handwritten", "seven", "digit", "drawn", "hand", "7", "thick", "thin", "one"]


@pytest.fixture
def tok() -> Tokenizer:
    return Tokenizer(WORDS, max_length=8)


@pytest.fixture
def encoder(tok: Tokenizer) -> TinyTextEncoder:
    torch.manual_seed(0)
    return TinyTextEncoder(tok, dim=32, layers=2, heads=4).eval()


def ids_of(tok: Tokenizer, prompt: str) -> list[int]:
    batch = tok.encode([prompt])
    return batch.ids[0][batch.mask[0]].tolist()


# -- tokenizer ------------------------------------------------------------------


def test_vocabulary_is_specials_then_sorted_words(tok: Tokenizer) -> None:
    assert tok.tokens[:3] == ["<pad>", "<unk>", "<bos>"]
    assert tok.tokens[3:] == sorted(set(WORDS))
    assert tok.vocab_size == 3 + len(set(WORDS))


def test_case_and_punctuation_do_not_matter(tok: Tokenizer) -> None:
    assert ids_of(tok, "A handwritten SEVEN!!") == ids_of(tok, "a handwritten seven")
    assert ids_of(tok, "  a,handwritten...seven ") == ids_of(tok, "a handwritten seven")
    assert normalize("Hand-drawn 7!") == ["hand", "drawn", "7"]
    assert ids_of(tok, "a handwritten seven") == [BOS_ID] + [tok.tokens.index(w) for w in ["a", "handwritten", "seven"]]


def test_numerals_are_tokens(tok: Tokenizer) -> None:
    assert normalize("digit 7, not 12") == ["digit", "7", "not", "12"]
    assert ids_of(tok, "7")[1] == tok.tokens.index("7")


def test_unknown_words_become_unk_and_are_reported(tok: Tokenizer) -> None:
    batch = tok.encode(["a purple seven purple", "a seven"])
    assert ids_of(tok, "a purple seven") == [BOS_ID, tok.tokens.index("a"), UNK_ID, tok.tokens.index("seven")]
    assert batch.unknown == [["purple"], []]


def test_non_printable_characters_are_ignored(tok: Tokenizer) -> None:
    assert ids_of(tok, "a sev\u200ben\x00") == ids_of(tok, "a seven")
    assert normalize("a\nhandwritten\tseven") == ["a", "handwritten", "seven"]
    assert tok.encode(["hand\x07written"]).unknown == [[]]


def test_long_prompts_are_truncated_and_flagged(tok: Tokenizer) -> None:
    batch = tok.encode(["a " * 7, "a " * 8, "a"])
    assert batch.ids.shape == (3, 8) and batch.ids.dtype == torch.long
    assert batch.truncated == [False, True, False]
    assert batch.mask.sum(1).tolist() == [8, 8, 2]


def test_empty_prompt_is_just_bos(tok: Tokenizer) -> None:
    batch = tok.encode(["", "!!?", "\n"])
    assert batch.mask.dtype == torch.bool
    assert batch.ids[:, 0].tolist() == [BOS_ID] * 3
    assert batch.mask.sum(1).tolist() == [1, 1, 1]
    assert (batch.ids[:, 1:] == PAD_ID).all()
    assert batch.unknown == [[], [], []] and batch.truncated == [False] * 3


def test_a_bare_string_is_refused(tok: Tokenizer) -> None:
    with pytest.raises(TypeError):
        tok.encode("a seven")


def test_vocabulary_words_must_be_normalised() -> None:
    with pytest.raises(TinyDiffError, match="'Seven'"):
        Tokenizer(["Seven"])
    with pytest.raises(TinyDiffError, match="max_length"):
        Tokenizer(["seven"], max_length=0)


def test_vocab_json_round_trip(tok: Tokenizer, tmp_path) -> None:
    from tinydiff.files import json_bytes

    path = tmp_path / "vocab.json"
    path.write_bytes(json_bytes(tok.to_json()))  # what a model folder holds
    raw = json.loads(path.read_text())
    assert raw == {"format": 1, "tokens": tok.tokens, "max_length": 8}
    loaded = read_tokenizer(tmp_path)
    assert loaded.to_json() == tok.to_json()
    prompts = ["A handwritten SEVEN", "purple one", ""]
    assert torch.equal(loaded.encode(prompts).ids, tok.encode(prompts).ids)
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"], "no temporary file left behind"


def test_saved_id_order_is_kept(tmp_path) -> None:
    data = {"format": 1, "tokens": ["<pad>", "<unk>", "<bos>", "zero", "one"], "max_length": 4}
    assert Tokenizer.from_json(data).encode(["one"]).ids[0, 1].item() == 4


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"format": 2, "tokens": ["<pad>", "<unk>", "<bos>"], "max_length": 4}', "format 2"),
        ('{"format": 1, "tokens": "abc", "max_length": 4}', "list of strings"),
        ('{"format": 1, "tokens": ["<pad>", "<bos>", "<unk>"], "max_length": 4}', "must start with"),
        ('{"format": 1, "tokens": ["<pad>", "<unk>", "<bos>", "one", "one"], "max_length": 4}', "'one' appears more"),
        ('{"format": 1, "tokens": ["<pad>", "<unk>", "<bos>", "One"], "max_length": 4}', "'One'"),
        ('{"format": 1, "tokens": ["<pad>", "<unk>", "<bos>"], "max_length": 0}', "max_length"),
        ('{"format": 1, "tokens": ["<pad>", "<unk>", "<bos>"], "max_length": "16"}', "max_length"),
        ('{"format": 1, "tokens": ["<pad>", "<unk>", "<bos>"]}', "max_length"),
    ],
)
def test_corrupt_vocab_json_is_rejected(tmp_path, content: str, match: str) -> None:
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(TinyDiffError, match=match) as info:
        read_tokenizer(tmp_path)
    assert "\n" not in str(info.value)


def test_missing_vocab_json_is_a_tinydiff_error(tmp_path) -> None:
    with pytest.raises(TinyDiffError, match="missing"):
        read_tokenizer(tmp_path)


# -- encoder ------------------------------------------------------------------


def test_output_shapes_and_mask(encoder: TinyTextEncoder, tok: Tokenizer) -> None:
    tokens, mask, pooled = encoder.encode(["a handwritten seven", ""])
    assert tokens.shape == (2, 8, 32) and pooled.shape == (2, 32)
    assert mask.dtype == torch.bool and mask.sum(1).tolist() == [4, 1]
    assert torch.equal(mask, tok.encode(["a handwritten seven", ""]).mask)
    assert torch.equal(pooled, tokens[:, 0]), "pooled is the <bos> output"
    assert (tokens[~mask] == 0).all(), "padded positions are zeroed"


def test_padding_does_not_change_real_outputs(encoder: TinyTextEncoder, tok: Tokenizer) -> None:
    prompt = "a handwritten seven"
    with torch.no_grad():
        alone, mask, pooled = encoder.encode([prompt])
        batched, _, pooled_b = encoder.encode([prompt, "a thick hand drawn 7 one thin"])
        # fewer pad columns, and garbage ids under the padding
        batch = tok.encode([prompt])
        short, _, pooled_s = encoder(batch.ids[:, :5], batch.mask[:, :5])
        noisy = batch.ids.masked_fill(~batch.mask, 7)
        garbage, _, pooled_g = encoder(noisy, batch.mask)
    real = mask[0]
    for other, other_pooled in [(batched[:1], pooled_b[:1]), (short, pooled_s), (garbage, pooled_g)]:
        torch.testing.assert_close(other[0, : int(real.sum())], alone[0, real], rtol=0, atol=1e-5)
        torch.testing.assert_close(other_pooled, pooled, rtol=0, atol=1e-5)
    # the same with gradients on, which takes PyTorch's other (non-fused) attention path
    with_grad, _, _ = encoder.encode([prompt, "a thick hand drawn 7 one thin"])
    torch.testing.assert_close(with_grad[:1].detach(), alone, rtol=0, atol=1e-5)


def test_different_prompts_give_different_pooled_vectors(encoder: TinyTextEncoder) -> None:
    with torch.no_grad():
        _, _, pooled = encoder.encode(["a handwritten seven", "a handwritten one", "seven handwritten a", ""])
    for i in range(4):
        for j in range(i + 1, 4):
            assert (pooled[i] - pooled[j]).abs().max() > 1e-3, (i, j)


def test_all_empty_batch_has_no_nan(encoder: TinyTextEncoder) -> None:
    for mode in (encoder.eval, encoder.train):
        mode()
        tokens, mask, pooled = encoder.encode(["", "", "..."])
        assert torch.isfinite(tokens).all() and torch.isfinite(pooled).all()
        assert mask.sum().item() == 3


def test_gradients_reach_the_embeddings(tok: Tokenizer) -> None:
    torch.manual_seed(0)
    encoder = TinyTextEncoder(tok, dim=16, layers=1, heads=2).train()
    tokens, mask, pooled = encoder.encode(["a handwritten seven", "one"])
    (tokens.square().sum() + pooled.sum()).backward()
    grad = encoder.token_embedding.weight.grad
    used = [tok.tokens.index(w) for w in ["a", "handwritten", "seven", "one"]] + [BOS_ID]
    assert grad is not None and (grad[used].abs().sum(1) > 0).all()
    assert (grad[tok.tokens.index("thick")] == 0).all(), "unused words get no gradient"
    assert encoder.position_embedding.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in encoder.parameters())


def test_deterministic_on_cpu(tok: Tokenizer) -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        enc = TinyTextEncoder(tok, dim=16, layers=1, heads=2).eval()
        with torch.no_grad():
            outs.append(enc.encode(["a thin seven", "hand drawn 7"]))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_the_tokenizer_reports_unknown_words_and_truncation(encoder: TinyTextEncoder) -> None:
    info = encoder.tokenizer.encode(["a purple seven", "a " * 9])
    with torch.no_grad():
        tokens, mask, pooled = encoder.encode(["a purple seven", "a " * 9])
    assert info.unknown == [["purple"], []] and info.truncated == [False, True]
    assert torch.equal(info.mask, mask) and tokens.shape[0] == pooled.shape[0] == 2


def test_heads_must_divide_dim(tok: Tokenizer) -> None:
    with pytest.raises(TinyDiffError, match="heads=3 does not divide dim=32"):
        TinyTextEncoder(tok, dim=32, heads=3)


# -- registration ---------------------------------------------------------------


def test_registers_tinytext_through_the_hook() -> None:
    host = PluginHost()
    host.add(text, "tinydiff.nn.text")
    try:
        assert host.registries["text_encoder"].get("tinytext") is TinyTextEncoder
        assert host.plugins["tinydiff.nn.text"].registered == {"text_encoder": ["tinytext"]}
    finally:
        host.remove("tinydiff.nn.text")
    with pytest.raises(TinyDiffError, match="unknown text encoder 'tinytext'"):
        host.registries["text_encoder"].get("tinytext")
