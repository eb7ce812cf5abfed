"""A word tokenizer and a small transformer text encoder for prompts like "a handwritten seven".

The text encoder role, which a plugin's replacement must keep:

- ``cls(tokenizer, *, dim, layers, heads, dropout)``, with ``dim`` the width of its outputs
- ``encode(list[str]) -> tokens [B, L, dim], mask [B, L] bool, pooled [B, dim]``, on the module's device

The vocabulary lives in a model folder's ``vocab.json`` (read and written by :mod:`tinydiff.checkpoint`):
``{"format": 1, "tokens": [all tokens in id order], "max_length": 16}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.nn as nn

from ..errors import TinyDiffError
from ..hookspecs import hookimpl

VOCAB_FORMAT = 1
PAD, UNK, BOS = "<pad>", "<unk>", "<bos>"
SPECIALS = (PAD, UNK, BOS)  # ids 0, 1, 2: fixed, so embeddings stay meaningful whatever the vocabulary
PAD_ID, UNK_ID, BOS_ID = 0, 1, 2
_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits; everything else separates words


@dataclass
class TokenizedBatch:
    """What ``Tokenizer.encode`` returns: the tensors plus what the CLI should warn about."""

    ids: torch.Tensor  # [B, max_length] int64, padded with <pad> = 0
    mask: torch.Tensor  # [B, max_length] bool, True for real tokens (<bos> included)
    unknown: list[list[str]]  # per text, the distinct words that became <unk>, in order of appearance
    truncated: list[bool]  # per text, whether it had more than max_length - 1 words (the rest was dropped)


class Tokenizer:
    """Lowercase, punctuation-insensitive word tokenizer: ``<pad>``, ``<unk>``, ``<bos>``, then the words sorted."""

    def __init__(self, words: Iterable[str], *, max_length: int = 16) -> None:
        words = sorted(set(words))
        for word in words:
            if not isinstance(word, str) or normalize(word) != [word]:
                raise TinyDiffError(f"vocabulary word {word!r} is not one lowercase word of letters or digits")
        self._init(list(SPECIALS) + words, max_length)

    def _init(self, tokens: list[str], max_length: int) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise TinyDiffError(f"text max_length must be a positive integer, got {max_length!r}")
        self.tokens = tokens  # id order: the embedding table is indexed by position in this list
        self.max_length = max_length  # <bos> plus at most max_length - 1 words
        self._ids = {token: i for i, token in enumerate(tokens)}

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode(self, texts: list[str]) -> TokenizedBatch:
        """Token ids and mask, ``[B, max_length]``: ``<bos>`` first, then the words, then ``<pad>``."""
        if isinstance(texts, str):
            raise TypeError("Tokenizer.encode takes a list of strings, not a string")
        ids = torch.full((len(texts), self.max_length), PAD_ID, dtype=torch.long)
        unknown: list[list[str]] = []
        truncated: list[bool] = []
        for row, text in enumerate(texts):
            words = normalize(text)
            truncated.append(len(words) > self.max_length - 1)
            words = words[: self.max_length - 1]
            row_ids = [BOS_ID] + [self._ids.get(w, UNK_ID) for w in words]
            ids[row, : len(row_ids)] = torch.tensor(row_ids, dtype=torch.long)
            unknown.append(list(dict.fromkeys(w for w in words if w not in self._ids)))
        return TokenizedBatch(ids=ids, mask=ids != PAD_ID, unknown=unknown, truncated=truncated)

    # -- vocab.json ------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": VOCAB_FORMAT, "tokens": list(self.tokens), "max_length": self.max_length}

    @classmethod
    def from_json(cls, data: Any, *, source: str = "vocab.json") -> Tokenizer:
        """Rebuild a tokenizer, keeping the saved id order; a malformed vocabulary is a ``TinyDiffError``."""
        if not isinstance(data, dict):
            raise TinyDiffError(f"{source} must hold a JSON object")
        if data.get("format") != VOCAB_FORMAT:
            found = data.get("format")
            raise TinyDiffError(f"{source} has format {found!r}; this TinyDiff reads format {VOCAB_FORMAT}")
        unexpected = sorted(set(data) - {"format", "tokens", "max_length"})
        if unexpected:
            raise TinyDiffError(f"{source} has unexpected keys: {', '.join(unexpected)}")
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise TinyDiffError(f"{source}: 'tokens' must be a list of strings")
        if tuple(tokens[:3]) != SPECIALS:
            raise TinyDiffError(f"{source}: 'tokens' must start with {', '.join(SPECIALS)}, got {tokens[:3]}")
        if len(set(tokens)) != len(tokens):
            repeated = next(t for i, t in enumerate(tokens) if t in tokens[:i])
            raise TinyDiffError(f"{source}: token {repeated!r} appears more than once")
        for token in tokens[3:]:
            if normalize(token) != [token]:
                raise TinyDiffError(f"{source}: token {token!r} is not one lowercase word of letters or digits")
        max_length = data.get("max_length")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise TinyDiffError(f"{source}: 'max_length' must be a positive integer, got {max_length!r}")
        tokenizer = cls.__new__(cls)
        tokenizer._init(list(tokens), max_length)
        return tokenizer

    def __repr__(self) -> str:
        return f"Tokenizer({self.vocab_size - len(SPECIALS)} words, max_length={self.max_length})"


def normalize(text: str) -> list[str]:
    """Words of ``text``: whitespace -> space, other non-printables dropped, lowercased, split on non-alphanumerics."""
    if not isinstance(text, str):
        raise TypeError(f"a prompt must be a string, got {type(text).__name__}")
    kept = "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or ch.isprintable())
    return _WORD.findall(kept.lower())


class TinyTextEncoder(nn.Module):
    """A small pre-norm transformer encoder over word tokens (Vaswani et al. 2017; pre-norm as in Xiong et al. 2020)."""

    def __init__(
        self, tokenizer: Tokenizer, *, dim: int = 128, layers: int = 2, heads: int = 4, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if dim % heads != 0:
            raise TinyDiffError(f"text encoder heads={heads} does not divide dim={dim}; change one of them")
        self.tokenizer = tokenizer
        self.dim = dim  # width of tokens and pooled: what cross-attention and the pooled projection read
        self.token_embedding = nn.Embedding(tokenizer.vocab_size, dim, padding_idx=PAD_ID)
        self.position_embedding = nn.Embedding(tokenizer.max_length, dim)  # learned, one row per position
        nn.init.normal_(self.token_embedding.weight, std=0.02)  # small, as in GPT-2; pre-norm rescales anyway
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        with torch.no_grad():
            self.token_embedding.weight[PAD_ID].zero_()
        # A ModuleList, not nn.TransformerEncoder: the latter warns about nested tensors with norm_first.
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, heads, dim_feedforward=4 * dim, dropout=dropout,
                activation="gelu", batch_first=True, norm_first=True,
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)  # pre-norm layers leave the residual stream unnormalised

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``ids``, ``mask`` ``[B, L]`` (``L <= max_length``, ``mask[:, 0]`` True) -> tokens, mask, pooled.

        Padding is excluded as an attention key, so real outputs do not depend on it, and padded
        output rows are set to zero. ``pooled`` is the output at ``<bos>`` (position 0), read like
        BERT's [CLS]: it attends to every word, and is defined for the empty prompt too.
        """
        length = ids.shape[1]
        if length > self.tokenizer.max_length:
            raise ValueError(f"{length} tokens given; the position embedding has {self.tokenizer.max_length}")
        mask = mask.to(torch.bool)
        positions = torch.arange(length, device=ids.device)
        x = self.token_embedding(ids) + self.position_embedding(positions)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=~mask)
        x = self.norm(x) * mask[..., None]
        return x, mask, x[:, 0]

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokenize and encode on the module's device: tokens ``[B, L, dim]``, mask ``[B, L]``, pooled ``[B, dim]``."""
        batch = self.tokenizer.encode(texts)
        device = self.token_embedding.weight.device
        return self(batch.ids.to(device), batch.mask.to(device))


@hookimpl
def tinydiff_register_text_encoders(register) -> None:
    """The built-in text encoder."""
    register("tinytext", TinyTextEncoder)
