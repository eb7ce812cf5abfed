"""A loaded model ready to sample: the Python API behind ``tinydiff sample``.

    from tinydiff import Pipeline
    pipe = Pipeline.from_ref("runs/first")              # run dir, model folder or bundled name
    images = pipe.sample(16, seed=0)                     # uint8 [16, 28, 28], the default sampler
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import ModelFolderConfig, load_model_folder, resolve_model_ref
from .config import DEFAULT_GUIDANCE_INTERVAL
from .data import to_uint8
from .diffusion import Denoiser
from .errors import TinyDiffError
from .plugins import get_sampler
from .schedules import NoiseSchedule

# Classifier-free guidance weight, chosen by measurement on the bundled model (docs/text-to-image.md
# #classifier-free-guidance): 1.5 kept prompt accuracy at 99.5% and brought MNIST-FD to 1.1x the
# real-data floor; 3.0 reached 100% but 3.5x the floor (more guidance, less variety). It applies
# within DEFAULT_GUIDANCE_INTERVAL (tinydiff.config) only.
DEFAULT_GUIDANCE = 1.5


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; an unavailable device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TinyDiffError("--device cuda was asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TinyDiffError("--device mps was asked for, but MPS is not available; use --device cpu or auto")
    return torch.device(name)


class Pipeline:
    """A network, its noise schedule and its objective, as saved in one model folder."""

    def __init__(self, config: ModelFolderConfig, model: torch.nn.Module, *, path: Path | None = None) -> None:
        self.config = config
        self.model = model
        self.path = path
        self.device = next(model.parameters()).device
        self.schedule = NoiseSchedule.from_name(config.schedule.name, config.schedule.num_steps, **config.schedule.options)

    @classmethod
    def from_ref(cls, ref: str | None = None, *, device: str = "cpu") -> "Pipeline":
        """Load a run directory (its newest checkpoint), a model folder, or a bundled model (``None``: the default)."""
        folder = resolve_model_ref(ref)
        config, model = load_model_folder(folder, device=resolve_device(device))
        if next(model.parameters()).device.type == "cpu":
            # NHWC convolutions: 20% less time per step on a 2-core CPU (docs/performance.md, command-line
            # latency); the layout is fixed per device, so the same seed still gives the same images
            model = model.to(memory_format=torch.channels_last)
        return cls(config, model, path=folder)

    @property
    def is_text_model(self) -> bool:
        return self.config.model.text is not None

    @torch.no_grad()
    def sample(
        self,
        num: int,
        *,
        prompts: list[str] | None = None,
        guidance: float = DEFAULT_GUIDANCE,
        guidance_interval: tuple[float, float] | None = DEFAULT_GUIDANCE_INTERVAL,
        seed: int = 0,
        sampler: str | None = None,
        steps: int | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> torch.Tensor:
        """Draw ``num`` images as uint8 ``[num, H, W]``; the same seed gives the same images on CPU.

        ``prompts`` (one per image; "" is unconditional) need a text model; ``guidance`` is the
        classifier-free guidance weight (Ho & Salimans 2022), 1.0 for none, applied at the noise
        levels in ``guidance_interval`` (sigma bounds; None: every step). ``sampler=None``
        uses the measured default sampler and steps (``tinydiff.config.DEFAULT_SAMPLER``).
        """
        from .config import sampling_defaults

        sampler, steps = sampling_defaults(sampler, steps)
        fn = get_sampler(sampler)
        cfg = self.config.model
        context = uncond = None
        if prompts is not None:
            if not self.is_text_model:
                raise TinyDiffError("this model is unconditional: it takes no prompt; drop the prompt")
            if len(prompts) != num:
                raise TinyDiffError(f"got {len(prompts)} prompts for {num} images; give one prompt per image")
            context = self.model.encode_text(prompts)
            uncond = self.model.encode_text([""] * num)
        elif self.is_text_model:  # no prompt: the unconditional prompt, encoded once rather than every step
            context = self.model.encode_text([""] * num)
        generator = torch.Generator(self.device).manual_seed(seed)
        x_T = torch.randn((num, cfg.in_channels, cfg.image_size, cfg.image_size), generator=generator, device=self.device)
        denoiser = Denoiser(self.model, self.schedule, objective=self.config.diffusion.objective,
                            context=context, uncond_context=uncond, guidance=guidance,
                            guidance_interval=guidance_interval)  # fmt: skip
        x0 = fn(denoiser, x_T, self.schedule, steps=steps, generator=generator, callback=callback)
        return to_uint8(x0)
