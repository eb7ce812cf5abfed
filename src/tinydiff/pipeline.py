"""A loaded model ready to sample: the Python API behind ``tinydiff sample`` and ``tinydiff eval``.

    from tinydiff import Pipeline
    pipe = Pipeline.from_ref()                           # the bundled model; or a run dir or model folder
    out = pipe("a handwritten seven", num_images=4)      # out.images: uint8 [4, 28, 28]; out.seed draws them again
    out = pipe("the year 2026", num_images=4)            # a whole number: uint8 [4, 28, 94], one window a digit
    images = pipe.sample(16, seed=0)                     # the tensor alone; the same seed, the same images

``Pipeline`` owns the sampling policy: the defaults (``pipe.defaults``, a
:class:`~tinydiff.config.SamplingOptions`) are filled in here and nowhere else, and
every prompt is checked here, so a Python caller gets the command line's errors and
warnings.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import ModelFolderConfig, load_model_folder, resolve_model_ref
from .config import SamplingOptions
from .data import to_uint8
from .diffusion import EpsilonPredictor, MultiDiffusion, number_canvas
from .errors import TinyDiffError
from .outputs import PipelineOutput, Trajectory, TrajectoryRecorder
from .plugins import get_sampler
from .prompts import check_prompt, number_in_prompt, window_prompts
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


def fresh_seed() -> int:
    """A seed from the operating system's randomness, in [0, 2**31): what ``seed=None`` draws."""
    return secrets.randbelow(2**31)


def for_device(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` on ``device``, in that device's memory layout: NHWC on the CPU, PyTorch's default elsewhere.

    NHWC convolutions take 20% less time per step on a 2-core CPU (docs/performance.md, command-line
    latency); the layout is fixed per device, so the same seed still gives the same images.
    """
    layout = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    return model.to(device=device, memory_format=layout)


def _takes(function: Any, name: str) -> bool:
    """Whether ``function`` accepts the keyword argument ``name`` (by name or through ``**kwargs``)."""
    import inspect

    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the call decide
        return True
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def check_drawn(x0: Any, x_T: torch.Tensor, sampler: str) -> None:
    """What a sampler returned is images of x_T's shape with finite values; otherwise an error naming the sampler and its plugin."""
    from .plugins import plugin_of

    who = f"sampler {sampler!r} (from plugin {plugin_of('sampler', sampler)!r})"
    if not isinstance(x0, torch.Tensor) or tuple(x0.shape) != tuple(x_T.shape):
        got = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise TinyDiffError(f"{who} returned {got}, not images of shape {tuple(x_T.shape)}; the sampler is broken")
    if not bool(torch.isfinite(x0).all()):
        raise TinyDiffError(
            f"{who} returned non-finite values (NaN or infinity); no image was written. "
            "If the model's weights are sound, report it to the plugin's author or pick another --sampler"
        )


class Pipeline:
    """A network, its noise schedule and its objective, as saved in one model folder, and how to sample it."""

    def __init__(self, config: ModelFolderConfig, model: torch.nn.Module, *, path: Path | None = None) -> None:
        self.config = config
        self.model = model
        self.path = path
        self.device = next(model.parameters()).device
        self.schedule = NoiseSchedule.from_config(config.schedule)
        self.defaults = SamplingOptions()
        self.last_seed: int | None = None  # the seed of the latest sample, drawn or given

    @classmethod
    def from_ref(cls, ref: str | None = None, *, device: str = "auto") -> "Pipeline":
        """Load a run directory (its newest checkpoint), a model folder, or a bundled model (``None``: the default).

        ``device="auto"`` picks CUDA, then MPS, then the CPU, as the command line does.
        """
        folder = resolve_model_ref(ref)
        target = resolve_device(device)
        config, model = load_model_folder(folder, device=target)
        return cls(config, for_device(model, target), path=folder)

    def to(self, device: str | torch.device) -> "Pipeline":
        """Move the model to ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``); returns this pipeline."""
        target = resolve_device(device) if isinstance(device, str) else device
        self.model = for_device(self.model, target)
        self.device = next(self.model.parameters()).device
        return self

    def __repr__(self) -> str:
        """The model, its text encoder, where it runs and how it samples by default, one line each."""
        cfg, d = self.config, self.defaults
        parameters = sum(p.numel() for p in self.model.parameters())
        text = "none (unconditional)"
        if cfg.model.text is not None:
            tokenizer = getattr(getattr(self.model, "text_encoder", None), "tokenizer", None)
            words = f", {tokenizer.vocab_size} tokens" if tokenizer is not None else ""
            text = (f"{cfg.model.text.encoder}, {cfg.model.text.layers} layers of width {cfg.model.text.dim}{words}, "
                    f"prompts up to {cfg.model.text.max_length - 1} words")  # fmt: skip
        steps = f"{d.steps} steps" if d.steps else "its own steps"
        interval = "every step" if d.guidance_interval is None else "sigma in ({:g}, {:g}]".format(*d.guidance_interval)
        rows = {
            "model": f"UNet, {parameters / 1e6:.2f}M parameters, {cfg.model.image_size}x{cfg.model.image_size} images",
            "text": text,
            "diffusion": f"{cfg.schedule.name} schedule, T = {cfg.schedule.num_timesteps}, predicts {cfg.diffusion.objective}",
            "device": str(self.device),
            "defaults": f"{d.sampler} sampler, {steps}, guidance {d.guidance:g} at {interval}",
            "path": str(self.path) if self.path else "none (built in memory)",
        }
        name = self.path.name if self.path else "in memory"
        return f"Pipeline({name})\n" + "\n".join(f"  {key:10s} {value}" for key, value in rows.items())

    @property
    def is_text_model(self) -> bool:
        return self.config.model.text is not None

    def options(self, **given: Any) -> SamplingOptions:
        """``self.defaults`` with every option that is given (not None) put in: the options a sample uses.

        Checked against this model before any work: the sampler must be registered, its steps
        at most the schedule's T, and a ``spacing`` one the sampler takes.
        """
        opts = self.defaults.merged(**given)
        sampler = get_sampler(opts.sampler)
        if opts.spacing is not None:
            from .samplers import check_spacing

            check_spacing(opts.spacing)
            if not _takes(sampler, "spacing"):
                raise TinyDiffError(f"sampler {opts.sampler!r} takes no timestep spacing; drop --spacing or pick a built-in sampler")
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

    def canvas_widths(self, prompts: list[str] | None, num: int = 1) -> list[int]:
        """Each image's width: the model's size for a digit or none, wider for a number (:func:`~tinydiff.diffusion.number_canvas`)."""
        size = self.config.model.image_size
        if prompts is None:
            return [size] * num
        return [number_canvas(len(number_in_prompt(p) or "0"), size)[0] for p in prompts]

    @torch.no_grad()
    def sample(
        self,
        num: int,
        *,
        prompts: list[str] | str | None = None,
        seed: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        guidance_interval: tuple[float, float] | str | None = None,
        spacing: str | None = None,
        trajectory: bool = False,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> torch.Tensor | Trajectory:
        """Draw ``num`` images as uint8 ``[num, H, W]``; the same seed gives the same images on CPU.

        ``prompts`` (one per image, or one string for all; "" is unconditional) need a text model.
        A prompt naming a number of several digits ("the year 2026") is drawn on a wide canvas,
        one window per digit fused by MultiDiffusion (Bar-Tal et al. 2023); W is then the widest
        canvas, narrower images centred on background (:meth:`canvas_widths` gives each width).
        ``seed=None`` draws a fresh seed, kept in ``self.last_seed`` (``pipe(...)`` returns it with
        the images). Every option left at None takes ``self.defaults``: the sampler and its steps,
        the classifier-free guidance weight (Ho & Salimans 2022; 1 for none) and the noise levels
        (sigma bounds) where guidance applies (``"all"``: every step), and the timesteps the sampler
        visits (``spacing``: see :func:`~tinydiff.samplers.timestep_grid`). ``trajectory=True`` returns a
        :class:`~tinydiff.outputs.Trajectory` instead: x_t and the predicted x_0 at every step,
        the images as its ``.images``.
        """
        opts = self.options(sampler=sampler, steps=steps, guidance=guidance, guidance_interval=guidance_interval,
                            spacing=spacing)  # fmt: skip
        if isinstance(prompts, str):
            prompts = [prompts] * num
        if prompts is not None:
            prompts = self.check_prompts(prompts)
            if len(prompts) != num:
                raise TinyDiffError(f"got {len(prompts)} prompts for {num} images; give one prompt per image")
        self.last_seed = fresh_seed() if seed is None else seed
        generator = torch.Generator(self.device).manual_seed(self.last_seed)
        windows = [window_prompts(p) for p in prompts] if prompts is not None else [None] * num
        if not any(windows):  # digits only: one batch, as a model trained on single digits draws them
            return self._draw(prompts, None, num, opts, generator, trajectory, callback)
        # whole numbers: one batch per number length, shortest first, each on its own canvas width
        lengths = [len(w) if w else 1 for w in windows]
        drawn: list[tuple[list[int], Any]] = []
        for k in sorted(set(lengths)):
            index = [i for i, length in enumerate(lengths) if length == k]
            group = [prompts[i] for i in index] if prompts is not None else None
            group_windows = [w for i in index for w in windows[i]] if k > 1 else None  # type: ignore[union-attr]
            drawn.append((index, self._draw(group, group_windows, len(index), opts, generator, trajectory, callback)))
        return _assemble(drawn, num, trajectory)

    def _draw(self, prompts: list[str] | None, windows: list[str] | None, num: int, opts: SamplingOptions,
              generator: torch.Generator, trajectory: bool, callback: Any) -> torch.Tensor | Trajectory:  # fmt: skip
        """``num`` images of the same width: digits (``windows`` None) or numbers of k digits (``windows``: k per image)."""
        cfg = self.config.model
        context = uncond = None
        conditions = windows if windows is not None else prompts
        if conditions is not None:
            context = self.model.encode_text(conditions)
            uncond = self.model.encode_text([""] * len(conditions))
        elif self.is_text_model:  # no prompt: the unconditional prompt, encoded once rather than every step
            context = self.model.encode_text([""] * num)
        predict_eps: Any = EpsilonPredictor(self.model, self.schedule, objective=self.config.diffusion.objective,
                                            context=context, uncond_context=uncond, guidance=opts.guidance,
                                            guidance_interval=opts.guidance_interval)  # fmt: skip
        width = cfg.image_size
        if windows is not None:
            width, offsets = number_canvas(len(windows) // num, cfg.image_size)
            predict_eps = MultiDiffusion(predict_eps, offsets, cfg.image_size)
        x_T = torch.randn((num, cfg.in_channels, cfg.image_size, width), generator=generator, device=self.device)
        recorder = TrajectoryRecorder(x_T, self.schedule, then=callback) if trajectory else None
        extra = {"spacing": opts.spacing} if opts.spacing is not None else {}  # plugin samplers need not take it
        x0 = get_sampler(opts.sampler)(predict_eps, x_T, self.schedule, steps=opts.steps, generator=generator,
                                       callback=recorder or callback, **extra)  # fmt: skip
        check_drawn(x0, x_T, opts.sampler)
        return recorder.trajectory() if recorder is not None else to_uint8(x0)

    def __call__(
        self,
        prompt: str | list[str] | None = None,
        *,
        num_images: int = 1,
        seed: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        guidance_interval: tuple[float, float] | str | None = None,
        spacing: str | None = None,
        trajectory: bool = False,
        callback: Callable[[dict[str, Any]], None] | None = None,
    ) -> PipelineOutput:
        """``num_images`` images of a prompt, or of each prompt in a list (one grid row each); None: unconditional.

        The notebook way in: returns a :class:`~tinydiff.outputs.PipelineOutput` with the images
        (a uint8 tensor, PIL images, a grid Jupyter shows inline), the prompts and the seed;
        ``seed=None`` draws a fresh one. The options are :meth:`sample`'s.
        """
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise TinyDiffError(f"num_images must be a whole number, 1 or more, got {num_images!r}")
        asked = [prompt] if isinstance(prompt, str) else prompt
        if asked is not None and not asked:
            raise TinyDiffError("got an empty list of prompts; give at least one, or None for unconditional images")
        prompts = None if asked is None else [p for p in self.check_prompts(asked) for _ in range(num_images)]
        drawn = self.sample(len(prompts) if prompts is not None else num_images, prompts=prompts, seed=seed,
                            sampler=sampler, steps=steps, guidance=guidance, guidance_interval=guidance_interval,
                            spacing=spacing, trajectory=trajectory, callback=callback)  # fmt: skip
        path = drawn if isinstance(drawn, Trajectory) else None
        return PipelineOutput(
            images=path.images if path is not None else drawn,
            prompts=prompts,
            seed=self.last_seed,
            nrow=num_images if asked is not None and len(asked) > 1 else None,
            trajectory=path,
        )


def _pad_width(images: torch.Tensor, width: int) -> torch.Tensor:
    """uint8 ``[..., H, w]`` centred on a background of 0 to ``[..., H, width]``."""
    left = (width - images.shape[-1]) // 2
    return torch.nn.functional.pad(images, (left, width - images.shape[-1] - left))


def _assemble(drawn: list[tuple[list[int], Any]], num: int, trajectory: bool) -> torch.Tensor | Trajectory:
    """Batches drawn apart put back in the prompts' order, each padded to the widest canvas."""
    order = torch.tensor([i for index, _ in drawn for i in index]).argsort()
    if not trajectory:
        width = max(images.shape[-1] for _, images in drawn)
        return torch.cat([_pad_width(images, width) for _, images in drawn])[order]
    width = max(path.x_t.shape[-1] for _, path in drawn)
    x_t = torch.cat([_pad_width(path.x_t, width) for _, path in drawn], dim=1)[:, order]
    pred_x0 = torch.cat([_pad_width(path.pred_x0, width) for _, path in drawn], dim=1)[:, order]
    return Trajectory(x_t=x_t, pred_x0=pred_x0, sigma=drawn[0][1].sigma)
