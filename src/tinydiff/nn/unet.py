"""The UNet denoiser, assembled from registered blocks (Ho et al. 2020, app. B).

``ModelConfig`` switches reproduce the milestone story: ``time_embedding=False``
and ``resample=False`` give the bare stage-1 network; ``resample=False`` alone
is stage 2; both on is stage 3. A ``text`` config adds stage 4: a text encoder
whose token embeddings cross-attention blocks read, and whose pooled vector
joins the timestep embedding.
"""

from __future__ import annotations

from typing import Any, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from ..errors import TinyDiffError
from ..plugins import get_block
from .embeddings import TimestepEmbedding

Context = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # text tokens [B, L, D], mask [B, L], pooled [B, D]


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


class UNet(nn.Module):
    """eps_theta(x_t, t): predicts from a noisy image what the diffusion objective asks for."""

    def __init__(self, cfg: ModelConfig, *, tokenizer: Any = None) -> None:
        super().__init__()
        check_architecture(cfg)
        self.cfg = cfg
        blocks = cfg.blocks
        res_cls, down_cls, up_cls = get_block(blocks.res), get_block(blocks.down), get_block(blocks.up)
        attn_cls = get_block(blocks.attention)
        base = cfg.base_channels
        emb_ch = 4 * base if cfg.time_embedding else None
        self.time_embed = TimestepEmbedding(base, emb_ch) if emb_ch else None
        resolutions = level_resolutions(cfg)

        self.text_encoder: nn.Module | None = None
        self.text_to_emb: nn.Module | None = None
        if cfg.text is not None:
            self.text_encoder = build_text_encoder(cfg, tokenizer)
            xattn_cls = get_block(blocks.cross_attention)
            if emb_ch:
                self.text_to_emb = nn.Linear(cfg.text.dim, emb_ch)  # the pooled prompt joins the timestep embedding
                nn.init.zeros_(self.text_to_emb.weight)  # with zero-initialised cross-attention outputs too,
                nn.init.zeros_(self.text_to_emb.bias)  # a new text model starts as the unconditional network

        def res_block(cin: int, cout: int) -> nn.Module:
            return res_cls(cin, cout, emb_channels=emb_ch, dropout=cfg.dropout, groups=cfg.groups)

        def attention(ch: int, res: int) -> nn.ModuleList:
            """Self-attention, then cross-attention to the prompt, each where the config asks for it."""
            use = res in cfg.attention_resolutions
            layers = [attn_cls(ch, heads=cfg.heads, groups=cfg.groups) if use else nn.Identity()]
            if cfg.text is not None and res in cfg.cross_attention_resolutions:
                layers.append(xattn_cls(ch, context_dim=cfg.text.dim, heads=cfg.heads, groups=cfg.groups))
            return nn.ModuleList(layers)

        self.conv_in = nn.Conv2d(cfg.in_channels, base, 3, padding=1)
        self.down = nn.ModuleList()
        skip_channels = [base]
        ch = base
        last = len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(nn.ModuleList([res_block(ch, base * mult), attention(base * mult, resolutions[level])]))
                ch = base * mult
                skip_channels.append(ch)
            if level != last:
                self.down.append(down_cls(ch) if cfg.resample else nn.Identity())
                skip_channels.append(ch)

        self.mid = nn.ModuleList([res_block(ch, ch), attention(ch, resolutions[-1]), res_block(ch, ch)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(
                    nn.ModuleList([res_block(ch + skip_channels.pop(), base * mult), attention(base * mult, resolutions[level])])
                )
                ch = base * mult
            if level != 0:
                self.up.append(up_cls(ch) if cfg.resample else nn.Identity())

        self.norm_out = nn.GroupNorm(cfg.groups, ch)
        self.conv_out = nn.Conv2d(ch, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def encode_text(self, prompts: list[str]) -> Context:
        """Token embeddings, padding mask and pooled vector of the prompts ("" is the unconditional prompt)."""
        if self.text_encoder is None:
            raise TinyDiffError("this model is unconditional: it takes no prompt")
        return self.text_encoder.encode(prompts)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: Context | None = None) -> torch.Tensor:
        """x: [B, C, H, W] noisy images, t: [B] integer timesteps, context from ``encode_text`` -> [B, C, H, W]."""
        emb = self.time_embed(t) if self.time_embed is not None else None
        if self.text_encoder is not None and context is None:
            context = self.encode_text([""] * x.shape[0])
        if self.text_to_emb is not None and emb is not None and context is not None:
            emb = emb + self.text_to_emb(context[2])

        def attend(layers: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
            h = layers[0](h)
            if len(layers) > 1:
                h = layers[1](h, context[0], context[1])
            return h

        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            if isinstance(layer, nn.ModuleList):
                h = attend(layer[1], layer[0](h, emb))
            else:
                h = layer(h)
            skips.append(h)
        h = self.mid[2](attend(self.mid[1], self.mid[0](h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = attend(layer[1], layer[0](torch.cat([h, skips.pop()], dim=1), emb))
            else:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


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
