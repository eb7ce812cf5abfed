"""Shared by the benchmarks: the diffusers baseline, and small helpers.

The baseline is a class-conditional diffusers ``UNet2DModel`` (label 10 is the "no label"
class, dropped in 10% of steps for classifier-free guidance). It is wrapped so TinyDiff's own
:class:`tinydiff.pipeline.Pipeline`, samplers and evaluation run it unchanged: its
``encode_text`` turns a prompt into a class label with TinyDiff's prompt parser, so both
models are sampled and scored by exactly the same code at the same number of evaluations.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

NULL_LABEL = 10


def fail(message: str) -> None:
    """A figure that cannot be measured stops the benchmark loudly (exit status 1)."""
    print(f"benchmark failed: {message}", file=sys.stderr)
    raise SystemExit(1)


def require_diffusers() -> Any:
    try:
        import diffusers
    except ImportError:
        fail('diffusers is not installed; it is a benchmark-only extra: pip install -e ".[bench]"')
    return diffusers


def diffusers_unet(size: str = "small") -> nn.Module:
    """The baseline: channels 32/64/64, one layer per block (1.16 M), or 32/64/128, two layers (4.0 M)."""
    from diffusers import UNet2DModel

    channels, layers = {"small": ((32, 64, 64), 1), "gpu": ((32, 64, 128), 2)}[size]
    return UNet2DModel(
        sample_size=28, in_channels=1, out_channels=1, block_out_channels=channels, layers_per_block=layers,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        num_class_embeds=NULL_LABEL + 1,
    )  # fmt: skip


class ClassConditional(nn.Module):
    """A diffusers UNet behind TinyDiff's model interface: ``model(x, t, context)`` and ``encode_text``."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor]:
        from tinydiff.prompts import digits_in_prompt

        labels = []
        for prompt in prompts:
            digits = digits_in_prompt(prompt)
            labels.append(min(digits) if digits else NULL_LABEL)
        return (torch.tensor(labels, dtype=torch.long, device=next(self.parameters()).device),)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: tuple[torch.Tensor] | None = None) -> torch.Tensor:
        labels = context[0] if context is not None else torch.full_like(t, NULL_LABEL)
        return self.unet(x, t, class_labels=labels).sample


def baseline_pipeline(model: ClassConditional) -> Any:
    """A TinyDiff Pipeline around the baseline: linear schedule, T = 1000, epsilon, as its training used."""
    from tinydiff.checkpoint import ModelFolderConfig
    from tinydiff.config import DiffusionConfig, ModelConfig, ScheduleConfig, TextConfig
    from tinydiff.pipeline import Pipeline

    config = ModelFolderConfig(
        tinydiff_version="benchmark", model=ModelConfig(text=TextConfig()), schedule=ScheduleConfig(),
        diffusion=DiffusionConfig(), training={"note": "diffusers UNet2DModel baseline"},
    )  # fmt: skip
    return Pipeline(config, model.eval())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_finite(name: str, value: float) -> float:
    if value is None or not math.isfinite(value):
        fail(f"{name} came out as {value!r}; the run did not produce a usable figure")
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def machine() -> str:
    import os
    import platform

    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores{gpu}, torch {torch.__version__}"
