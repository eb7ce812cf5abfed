"""UNet building blocks, registered by name so a config (or a plugin) can swap them.

Each role has one constructor signature, which a replacement must keep:

- ``res``: ``cls(in_channels, out_channels, *, emb_channels, dropout, groups)``, called ``block(x, emb)``
- ``down`` / ``up``: ``cls(channels)``, called ``block(x)``; halve / double the resolution
- ``attention``: ``cls(channels, *, heads, groups)``, called ``block(x)``
- ``cross_attention``: ``cls(channels, *, context_dim, heads, groups)``, called ``block(x, context, mask)``
  with ``context`` [B, L, context_dim] token embeddings and ``mask`` [B, L] (True: a real token)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..hookspecs import hookimpl


class ResBlock(nn.Module):
    """Residual block with GroupNorm and SiLU; adds the (projected) timestep embedding (Ho et al. 2020, app. B)."""

    def __init__(
        self, in_channels: int, out_channels: int, *, emb_channels: int | None, dropout: float = 0.0, groups: int = 8
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_channels, out_channels) if emb_channels else None
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb_proj is not None and emb is not None:
            h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.skip(x)


class Downsample(nn.Module):
    """Strided 3x3 convolution: 28 -> 14 -> 7."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour doubling then a 3x3 convolution (avoids checkerboard artefacts)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map, residual (Vaswani et al. 2017)."""

    def __init__(self, channels: int, *, heads: int = 4, groups: int = 8) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention width {channels} is not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class CrossAttention(nn.Module):
    """Pixels attend to text-token embeddings, residual (Rombach et al. 2022, sec. 3.3); padding is masked out."""

    def __init__(self, channels: int, *, context_dim: int, heads: int = 4, groups: int = 8) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"cross-attention width {channels} is not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        d = c // self.heads
        q = self.q(self.norm(x)).reshape(b, self.heads, d, h * w).transpose(-1, -2)  # [B, heads, HW, d]
        k, v = self.kv(context).reshape(b, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4)  # each [B, heads, L, d]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


@hookimpl
def tinydiff_register_blocks(register) -> None:
    """The built-in blocks."""
    register("resblock", ResBlock)
    register("downsample", Downsample)
    register("upsample", Upsample)
    register("attention", SelfAttention)
    register("cross_attention", CrossAttention)
