"""A loaded model ready to sample: the Python API behind ``tinydiff sample`` and ``tinydiff eval``.

    from tinydiff import Pipeline
    pipe = Pipeline.from_ref("runs/first")              # run dir, model folder or bundled name
    images = pipe.sample(16, seed=0)                     # uint8 [16, 28, 28], the default sampler

``Pipeline`` owns the sampling policy: the defaults (``pipe.defaults``, a
:class:`~tinydiff.config.SamplingOptions`) are filled in here and nowhere else, and
every prompt is checked here, so a Python caller gets the command line's errors and
warnings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import ModelFolderConfig, load_model_folder, resolve_model_ref
from .config import SamplingOptions
from .data import to_uint8
from .diffusion import EpsilonPredictor
from .errors import TinyDiffError
from .plugins import get_sampler
from .prompts import check_prompt
from .schedules import NoiseSchedule


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
    """A network, its noise schedule and its objective, as saved in one model folder, and how to sample it."""

    def __init__(self, config: ModelFolderConfig, model: torch.nn.Module, *, path: Path | None = None) -> None:
        self.config = config
        self.model = model
        self.path = path
        self.device = next(model.parameters()).device
        self.schedule = NoiseSchedule.from_config(config.schedule)
        self.defaults = SamplingOptions()

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

    def options(self, **given: Any) -> SamplingOptions:
        """``self.defaults`` with every option that is given (not None) put in: the options a sample uses.

        Checked against this model before any work: the sampler must be registered and its steps
        at most the schedule's T.
        """
        opts = self.defaults.merged(**given)
        get_sampler(opts.sampler)
        if opts.steps is not None and opts.steps > self.schedule.num_timesteps:
            raise TinyDiffError(
                f"{opts.steps} sampler steps asked for, but this model has {self.schedule.num_timesteps} "
                "diffusion timesteps; ask for at most that many"
            )
        return opts

    def check_prompts(self, prompts: list[str]) -> list[str]:
        """The prompts as they will be sampled (see :func:`tinydiff.prompts.check_prompt`), each distinct one checked once."""
        if isinstance(prompts, str):
            raise TinyDiffError("prompts takes a list of strings, one per image; wrap a single prompt in a list")
        if not self.is_text_model:
            raise TinyDiffError("this model is unconditional: it takes no prompt; drop the prompt")
        tokenizer = getattr(getattr(self.model, "text_encoder", None), "tokenizer", None)
        checked = {p: check_prompt(p, tokenizer) for p in dict.fromkeys(prompts)}
        return [checked[p] for p in prompts]

    @torch.no_grad()
    def sample(
        self,
        num: int,
        *,
        prompts: list[str] | None = None,
        seed: int = 0,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        guidance_interval: tuple[float, float] | str | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> torch.Tensor:
        """Draw ``num`` images as uint8 ``[num, H, W]``; the same seed gives the same images on CPU.

        ``prompts`` (one per image; "" is unconditional) need a text model. Every option left
        at None takes ``self.defaults``: the sampler and its steps, the classifier-free guidance
        weight (Ho & Salimans 2022; 1 for none) and the noise levels (sigma bounds) where
        guidance applies (``"all"``: every step).
        """
        opts = self.options(sampler=sampler, steps=steps, guidance=guidance, guidance_interval=guidance_interval)
        cfg = self.config.model
        context = uncond = None
        if prompts is not None:
            prompts = self.check_prompts(prompts)
            if len(prompts) != num:
                raise TinyDiffError(f"got {len(prompts)} prompts for {num} images; give one prompt per image")
            context = self.model.encode_text(prompts)
            uncond = self.model.encode_text([""] * num)
        elif self.is_text_model:  # no prompt: the unconditional prompt, encoded once rather than every step
            context = self.model.encode_text([""] * num)
        generator = torch.Generator(self.device).manual_seed(seed)
        x_T = torch.randn((num, cfg.in_channels, cfg.image_size, cfg.image_size), generator=generator, device=self.device)
        predict_eps = EpsilonPredictor(self.model, self.schedule, objective=self.config.diffusion.objective,
                                       context=context, uncond_context=uncond, guidance=opts.guidance,
                                       guidance_interval=opts.guidance_interval)  # fmt: skip
        x0 = get_sampler(opts.sampler)(predict_eps, x_T, self.schedule, steps=opts.steps, generator=generator, callback=callback)
        return to_uint8(x0)
