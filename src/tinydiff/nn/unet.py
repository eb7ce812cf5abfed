"""The UNet noise predictor, assembled from registered blocks (Ho et al. 2020, app. B).

``ModelConfig`` switches reproduce the milestone story: ``time_embedding=False``
and ``resample=False`` give the bare stage-1 network; ``resample=False`` alone
is stage 2; both on is stage 3. A ``text`` config adds stage 4: a text encoder
whose token embeddings cross-attention blocks read, and whose pooled vector
joins the timestep embedding.

The network reads like its diagram::

    conv_in -> downs[0] -> downs[1] -> ... -> mid -> ... -> ups[1] -> ups[0] -> norm_out, conv_out

Each level (:class:`DownLevel`, :class:`UpLevel`) holds ``blocks``, each a residual
block ``res`` followed by self-attention ``attn`` and cross-attention ``xattn`` where
the config puts them, and then its resampler ``down`` or ``up``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from ..errors import TinyDiffError
from ..plugins import get_block
from .embeddings import TimestepEmbedding


class Context(NamedTuple):
    """An encoded prompt, what cross-attention and the timestep embedding read."""

    tokens: torch.Tensor  # [B, L, D] token embeddings
    mask: torch.Tensor  # [B, L] bool, True for a real token
    pooled: torch.Tensor  # [B, D] one vector for the whole prompt


def check_architecture(cfg: ModelConfig) -> None:
    """Reject configs that would fail deep inside PyTorch, with a message saying which field to change."""
    widths = {cfg.base_channels * m for m in cfg.channel_mult} | {cfg.base_channels}
    for width in sorted(widths):
        if width % cfg.groups:
            raise TinyDiffError(f"model.groups={cfg.groups} does not divide the level width {width}; change one of them")
    if cfg.resample:
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if cfg.image_size % factor:
            raise TinyDiffError(
                f"model.image_size={cfg.image_size} cannot be halved {len(cfg.channel_mult) - 1} times; "
                "use fewer entries in model.channel_mult"
            )
    resolutions = set(level_resolutions(cfg))
    attended = [("attention_resolutions", r) for r in cfg.attention_resolutions]
    if cfg.text is not None:
        attended += [("cross_attention_resolutions", r) for r in cfg.cross_attention_resolutions]
        if cfg.text.dim % cfg.text.heads:
            raise TinyDiffError(f"model.text.heads={cfg.text.heads} does not divide model.text.dim={cfg.text.dim}")
    for field, res in attended:
        if res not in resolutions:
            raise TinyDiffError(f"model.{field} has {res}, but the levels are at {sorted(resolutions, reverse=True)}")
        for width in widths:
            if width % cfg.heads:
                raise TinyDiffError(f"model.heads={cfg.heads} does not divide the level width {width}")


def level_resolutions(cfg: ModelConfig) -> list[int]:
    """Feature-map size at each level: 28, 14, 7 with resampling; 28 everywhere without."""
    return [cfg.image_size // (2**i if cfg.resample else 1) for i in range(len(cfg.channel_mult))]


class LevelBlock(nn.Module):
    """A residual block, then self-attention and cross-attention to the prompt where the config puts them."""

    def __init__(self, res: nn.Module, attn: nn.Module | None = None, xattn: nn.Module | None = None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn
        self.xattn = xattn

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None, context: Context | None) -> torch.Tensor:
        h = self.res(h, emb)
        if self.attn is not None:
            h = self.attn(h)
        if self.xattn is not None:
            h = self.xattn(h, context.tokens, context.mask)
        return h


class DownLevel(nn.Module):
    """One resolution on the way down: blocks, each output kept for the skip connections, then ``down``."""

    def __init__(self, blocks: list[LevelBlock], down: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.down = down  # None at the lowest level; nn.Identity when the config turns resampling off

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None, context: Context | None, skips: list[torch.Tensor]) -> torch.Tensor:
        for block in self.blocks:
            h = block(h, emb, context)
            skips.append(h)
        if self.down is not None:
            h = self.down(h)
            skips.append(h)
        return h


class UpLevel(nn.Module):
    """One resolution on the way up: blocks, each reading the matching skip connection, then ``up``."""

    def __init__(self, blocks: list[LevelBlock], up: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.up = up  # None at the top level; nn.Identity when the config turns resampling off

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None, context: Context | None, skips: list[torch.Tensor]) -> torch.Tensor:
        for block in self.blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
        if self.up is not None:
            h = self.up(h)
        return h


class Middle(LevelBlock):
    """The bottleneck: a level block (residual block, attention, cross-attention), then a second residual block."""

    def __init__(self, res: nn.Module, attn: nn.Module | None, xattn: nn.Module | None, res2: nn.Module) -> None:
        super().__init__(res, attn, xattn)
        self.res2 = res2

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None, context: Context | None) -> torch.Tensor:
        return self.res2(super().forward(h, emb, context), emb)


class UNet(nn.Module):
    """eps_theta(x_t, t): predicts from a noisy image what the diffusion objective asks for."""

    def __init__(self, cfg: ModelConfig, *, tokenizer: Any = None) -> None:
        super().__init__()
        check_architecture(cfg)
        self.cfg = cfg
        names = cfg.blocks
        res_cls, down_cls, up_cls, attn_cls = (get_block(n) for n in (names.res, names.down, names.up, names.attention))
        base = cfg.base_channels
        emb_ch = 4 * base if cfg.time_embedding else None
        self.time_embed = TimestepEmbedding(base, emb_ch) if emb_ch else None
        resolutions = level_resolutions(cfg)

        self.text_encoder: nn.Module | None = None
        self.text_to_emb: nn.Module | None = None
        if cfg.text is not None:
            self.text_encoder = build_text_encoder(cfg, tokenizer)
            xattn_cls = get_block(names.cross_attention)
            if emb_ch:
                self.text_to_emb = nn.Linear(cfg.text.dim, emb_ch)  # the pooled prompt joins the timestep embedding
                nn.init.zeros_(self.text_to_emb.weight)  # with zero-initialised cross-attention outputs too,
                nn.init.zeros_(self.text_to_emb.bias)  # a new text model starts as the unconditional network

        # Blocks are built in the order the network runs them: that order fixes the random
        # initialisation for a seed and the order of parameters (optimizer state, gradient norm).
        def block(cin: int, cout: int, res: int) -> LevelBlock:
            return LevelBlock(
                res_cls(cin, cout, emb_channels=emb_ch, dropout=cfg.dropout, groups=cfg.groups),
                attn_cls(cout, heads=cfg.heads, groups=cfg.groups) if res in cfg.attention_resolutions else None,
                xattn_cls(cout, context_dim=cfg.text.dim, heads=cfg.heads, groups=cfg.groups)
                if cfg.text is not None and res in cfg.cross_attention_resolutions else None,
            )  # fmt: skip

        def resampler(cls: Any, ch: int) -> nn.Module:
            return cls(ch) if cfg.resample else nn.Identity()

        self.conv_in = nn.Conv2d(cfg.in_channels, base, 3, padding=1)
        skip_channels = [base]
        ch = base
        last = len(cfg.channel_mult) - 1
        downs = []
        for level, mult in enumerate(cfg.channel_mult):
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(block(ch, base * mult, resolutions[level]))
                ch = base * mult
                skip_channels.append(ch)
            down = resampler(down_cls, ch) if level != last else None
            if down is not None:
                skip_channels.append(ch)
            downs.append(DownLevel(blocks, down))
        self.downs = nn.ModuleList(downs)

        lowest = block(ch, ch, resolutions[-1])
        self.mid = Middle(lowest.res, lowest.attn, lowest.xattn, res_cls(ch, ch, emb_channels=emb_ch, dropout=cfg.dropout, groups=cfg.groups))

        ups = []
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            blocks = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(block(ch + skip_channels.pop(), base * mult, resolutions[level]))
                ch = base * mult
            ups.append(UpLevel(blocks, resampler(up_cls, ch) if level != 0 else None))
        self.ups = nn.ModuleList(ups)

        self.norm_out = nn.GroupNorm(cfg.groups, ch)
        self.conv_out = nn.Conv2d(ch, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def encode_text(self, prompts: list[str]) -> Context:
        """Token embeddings, padding mask and pooled vector of the prompts ("" is the unconditional prompt)."""
        if self.text_encoder is None:
            raise TinyDiffError("this model is unconditional: it takes no prompt")
        return Context(*self.text_encoder.encode(prompts))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: Context | None = None) -> torch.Tensor:
        """x: [B, C, H, W] noisy images, t: [B] integer timesteps, context from ``encode_text`` -> [B, C, H, W]."""
        emb = self.time_embed(t) if self.time_embed is not None else None
        if self.text_encoder is not None and context is None:
            context = self.encode_text([""] * x.shape[0])
        if context is not None:
            context = Context(*context)  # a plain (tokens, mask, pooled) tuple is accepted too
        if self.text_to_emb is not None and emb is not None and context is not None:
            emb = emb + self.text_to_emb(context.pooled)

        h = self.conv_in(x)
        skips = [h]
        for level in self.downs:
            h = level(h, emb, context, skips)
        h = self.mid(h, emb, context)
        for level in self.ups:
            h = level(h, emb, context, skips)
        return self.conv_out(F.silu(self.norm_out(h)))


def legacy_key_map(cfg: ModelConfig) -> dict[str, str]:
    """Module names of model folders of format 1 (unnamed lists) -> today's names, for :func:`upgrade_state_dict`.

    Format 1 held ``down.{i}``, ``mid.{i}`` and ``up.{i}`` lists, where a level's residual
    block was ``.0``, its self-attention ``.1.0`` and its cross-attention ``.1.1``, and
    resamplers took their own index.
    """
    renames: dict[str, str] = {}
    levels = len(cfg.channel_mult)
    for old, new, per_level in (("down", "downs", cfg.num_res_blocks), ("up", "ups", cfg.num_res_blocks + 1)):
        index = 0
        for position in range(levels):  # ``ups`` are stored lowest level first, as format 1 stored them
            for j in range(per_level):
                renames[f"{old}.{index}.0."] = f"{new}.{position}.blocks.{j}.res."
                renames[f"{old}.{index}.1.0."] = f"{new}.{position}.blocks.{j}.attn."
                renames[f"{old}.{index}.1.1."] = f"{new}.{position}.blocks.{j}.xattn."
                index += 1
            if position != levels - 1:  # every level but the last in its list ends with a resampler
                renames[f"{old}.{index}."] = f"{new}.{position}.{old}."
                index += 1
    renames.update({"mid.0.": "mid.res.", "mid.1.0.": "mid.attn.", "mid.1.1.": "mid.xattn.", "mid.2.": "mid.res2."})
    return renames


def upgrade_state_dict(tensors: dict[str, Any], cfg: ModelConfig) -> dict[str, Any]:
    """Rename a format-1 state dict's UNet keys to today's named structure (weights unchanged)."""
    renames = sorted(legacy_key_map(cfg).items(), key=lambda kv: -len(kv[0]))  # "down.1.0." before "down.1."
    out = {}
    for key, value in tensors.items():
        new = next((n + key[len(o):] for o, n in renames if key.startswith(o)), key)
        out[new] = value
    return out


def build_text_encoder(cfg: ModelConfig, tokenizer: Any = None) -> nn.Module:
    """The registered text encoder named in the config, with the given (or the caption) vocabulary."""
    from ..plugins import get_text_encoder
    from .text import Tokenizer

    assert cfg.text is not None
    if tokenizer is None:
        from ..captions import vocabulary

        tokenizer = Tokenizer(vocabulary(), max_length=cfg.text.max_length)
    encoder_cls = get_text_encoder(cfg.text.encoder)
    return encoder_cls(tokenizer, dim=cfg.text.dim, layers=cfg.text.layers, heads=cfg.text.heads)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
