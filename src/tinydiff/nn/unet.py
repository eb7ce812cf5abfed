"""The UNet denoiser, assembled from registered blocks (Ho et al. 2020, app. B).

``ModelConfig`` switches reproduce the milestone story: ``time_embedding=False``
and ``resample=False`` give the bare stage-1 network; ``resample=False`` alone
is stage 2; both on is stage 3.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from ..errors import TinyDiffError
from ..plugins import get_block
from .embeddings import TimestepEmbedding


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
    for res in cfg.attention_resolutions:
        if res not in resolutions:
            raise TinyDiffError(
                f"model.attention_resolutions has {res}, but the levels are at {sorted(resolutions, reverse=True)}"
            )
        for width in widths:
            if width % cfg.heads:
                raise TinyDiffError(f"model.heads={cfg.heads} does not divide the level width {width}")


def level_resolutions(cfg: ModelConfig) -> list[int]:
    """Feature-map size at each level: 28, 14, 7 with resampling; 28 everywhere without."""
    return [cfg.image_size // (2**i if cfg.resample else 1) for i in range(len(cfg.channel_mult))]


class UNet(nn.Module):
    """eps_theta(x_t, t): predicts from a noisy image what the diffusion objective asks for."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        check_architecture(cfg)
        self.cfg = cfg
        res_cls, down_cls, up_cls, attn_cls = (get_block(n) for n in cfg.blocks.model_dump().values())
        base = cfg.base_channels
        emb_ch = 4 * base if cfg.time_embedding else None
        self.time_embed = TimestepEmbedding(base, emb_ch) if emb_ch else None
        resolutions = level_resolutions(cfg)

        def res_block(cin: int, cout: int) -> nn.Module:
            return res_cls(cin, cout, emb_channels=emb_ch, dropout=cfg.dropout, groups=cfg.groups)

        def attention(ch: int, res: int) -> nn.Module:
            use = res in cfg.attention_resolutions
            return attn_cls(ch, heads=cfg.heads, groups=cfg.groups) if use else nn.Identity()

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

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] noisy images, t: [B] integer timesteps -> [B, C, H, W]."""
        emb = self.time_embed(t) if self.time_embed is not None else None
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](h, emb))
            else:
                h = layer(h)
            skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](torch.cat([h, skips.pop()], dim=1), emb))
            else:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
