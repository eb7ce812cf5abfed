"""The training loop: one function, UI-free, reporting progress through a callback.

    tinydiff train                                   # the laptop preset, MNIST, tracked in runs/<name>
    tinydiff train --preset stage1 --steps 2000      # the milestone story, stage by stage
    tinydiff train --run-dir runs/x --resume         # continue from the newest checkpoint
    torchrun --standalone --nproc_per_node 4 -m tinydiff train --run-dir runs/ddp

AdamW with linear warm-up and cosine decay, gradient clipping, an EMA of the
weights (what sampling uses), bf16 autocast on CUDA (and on the CPU with
``train.cpu_bf16``). Model init, data order and
noise each come from their own seeded generator, all saved in the checkpoint,
so a resumed run continues exactly. Ctrl-C or SIGTERM lets the step finish and
writes a checkpoint of it (``TrainResult.interrupted``). Under ``torchrun`` N processes train like
one process with batch N x B (:mod:`tinydiff.distributed`); rank 0 alone logs,
draws snapshots and writes checkpoints.

Where the rest lives: the batches in :mod:`tinydiff.data`, the loss in
:mod:`tinydiff.diffusion`, checkpoints in :mod:`tinydiff.checkpoint`, the run
directory in :mod:`tinydiff.tracking`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from . import __version__
from .checkpoint import (STATE_FILE, DeviceMismatch, InconsistentCheckpoint, ModelFolderConfig, checkpoint_path,
                         list_checkpoints, load_checkpoint, read_model_config, save_checkpoint)
from .config import Config
from .data import TrainingData, load_mnist, to_model_range
from .diffusion import training_loss
from .distributed import Distributed
from .errors import TinyDiffError
from .files import parse_step_name
from .nn.unet import UNet, count_parameters
from .pipeline import Pipeline, resolve_device
from .tracking import RunTracker, run_lock

Callback = Callable[[dict[str, Any]], None]
SNAPSHOT_SEED = 1234  # the same starting noise for every snapshot of every run


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    loss: float | None
    checkpoint: Path | None
    interrupted: int | None = None  # the signal (SIGINT, SIGTERM) that stopped the run, after a checkpoint
    already_done: bool = False  # ``resume`` found the run at its last step: nothing was trained or written


class TrainingAborted(BaseException):
    """A second Ctrl-C (or SIGTERM) while a stopped run was finishing its step or saving: stop at once.

    A ``BaseException``, like ``KeyboardInterrupt``: nothing should catch it on the way out but the
    clean-ups (a half-written checkpoint folder is removed, the run directory's lock released).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted again by {signal.Signals(signum).name}")
        self.signum = signum


class StopSignals:
    """SIGINT and SIGTERM ask the training loop to stop: it finishes the step, saves a checkpoint and returns.

    The first signal only sets :attr:`signum`; a second one (after ``debounce`` seconds: under ``torchrun``
    one Ctrl-C reaches a worker twice, from the terminal and forwarded by the launcher) raises
    :class:`TrainingAborted` wherever the program is. Handlers are installed only from the main thread
    and the previous ones are put back on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, debounce: float = 0.0) -> None:
        self.signum: int | None = None
        self.debounce = debounce
        self._first = 0.0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._first = signum, now
        elif now - self._first >= self.debounce:
            raise TrainingAborted(signum)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def learning_rate(step: int, config: Config) -> float:
    """Linear warm-up to ``lr``, then constant or cosine decay to ``min_lr_ratio * lr``."""
    tc = config.train
    if tc.warmup_steps and step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "constant":
        return tc.lr
    progress = min(1.0, (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps))
    return tc.lr * (tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    """EMA of weights with a warm-up, min(decay, (1 + n) / (10 + n)) (Tarvainen & Valpola 2017)."""
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - d)  # one fused kernel per group
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


class TrainingClock:
    """Time spent training, apart from snapshots, checkpoints and evaluation: for images/s and ``--max-minutes``."""

    def __init__(self, budget_minutes: float | None) -> None:
        self.budget = budget_minutes * 60 if budget_minutes else None  # seconds of training in this invocation
        self.trained = 0.0  # seconds of training steps so far
        self.interval_steps = 0  # steps since the last log line
        self._interval_start = time.perf_counter()
        self._paused = 0.0  # seconds of this interval not spent training

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.trained += time.perf_counter() - start
        self.interval_steps += 1

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self._paused += time.perf_counter() - start

    @property
    def out_of_time(self) -> bool:
        return self.budget is not None and self.trained >= self.budget

    def end_interval(self) -> tuple[int, float]:
        """Steps and training seconds since the last call, which starts the next interval."""
        now = time.perf_counter()
        steps, seconds = self.interval_steps, max(now - self._interval_start - self._paused, 1e-9)
        self.interval_steps, self._interval_start, self._paused = 0, now, 0.0
        return steps, seconds


def check_data_fits_model(images: torch.Tensor, config: Config, data_dir: str | None) -> None:
    """MNIST images are one-channel ``[N, H, W]``; the model must be built for that size and channel count."""
    where = f"the training images in {data_dir}" if data_dir else "the training images"
    h, w = images.shape[1:]
    mc = config.model
    if mc.in_channels != 1:
        raise TinyDiffError(
            f"model.in_channels = {mc.in_channels}, but {where} are grayscale (1 channel); set in_channels = 1"
        )
    if (h, w) != (mc.image_size, mc.image_size):
        raise TinyDiffError(
            f"{where} are {h}x{w} pixels, but model.image_size = {mc.image_size}; "
            f"set image_size = {h} or use {mc.image_size}x{mc.image_size} images" if h == w else
            f"{where} are {h}x{w} pixels; TinyDiff trains on square images of model.image_size = {mc.image_size}"
        )


def build_unet(config: Config) -> UNet:
    """The UNet of ``config.model``; a block that does not fit its place is a one-line error naming it."""
    try:
        return UNet(config.model)
    except TinyDiffError:
        raise
    except (TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        names = config.model.blocks.model_dump()
        swapped = {k: v for k, v in names.items() if v != type(config.model.blocks)().model_dump()[k]}
        which = ", ".join(f"model.blocks.{k} = {v!r}" for k, v in swapped.items())
        hint = f"check {which}: each block must take the arguments of the block it replaces" if swapped else "check the [model] settings"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TinyDiffError(f"the [model] config does not build a UNet ({reason}); {hint}") from None


def checked_setting(names: str, check: Callable[..., Any], **given: Any) -> None:
    try:
        check(**given)
    except TinyDiffError as exc:
        raise TinyDiffError(f"{names}: {exc}") from None


class Trainer:
    """The state of one run (network, EMA, optimizer, data order, noise) and one optimizer step."""

    def __init__(self, config: Config, run_dir: Path, dist: Distributed | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.dist = dist or Distributed()
        self.step = 0
        tc = config.train
        self.device = self.dist.init(resolve_device(tc.device))
        images, labels = load_mnist(tc.data_dir, split="train")  # one uint8 tensor: 47 MB, never a loader stall
        check_data_fits_model(images, config, tc.data_dir)  # before the network is built
        if tc.batch_size * self.dist.world_size > len(images):
            per = f" x {self.dist.world_size} processes" if self.dist.enabled else ""
            raise TinyDiffError(f"--batch-size {tc.batch_size}{per} is larger than the {len(images)} training images")
        if tc.eval_every:  # `--eval-every` scores against the test set: it must be there before the first step
            load_mnist(tc.data_dir, split="test")
        torch.manual_seed(tc.seed)
        self.model = build_unet(config)
        self.model = self.model.to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        # what sampling the EMA weights goes through: snapshots and evaluation use the same policy as `tinydiff sample`
        self.pipe = Pipeline(self.model_folder_config(), self.ema, path=self.run_dir)
        self.schedule = self.pipe.schedule
        # checked now, not after the first hour of training, and named as the config names them
        checked_setting("train.sample_sampler / train.sample_steps / train.sample_guidance", self.pipe.options,
                        sampler=tc.sample_sampler, steps=tc.sample_steps, guidance=tc.sample_guidance)  # fmt: skip
        if tc.eval_every:
            checked_setting("train.eval_sampler / train.eval_steps", self.pipe.options, sampler=tc.eval_sampler, steps=tc.eval_steps)
        if tc.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = self.dist.wrap(self.model, self.device)  # what the training step calls
        if tc.compile:
            self.net = torch.compile(self.net)
        if self.device.type == "cuda":
            images = images.to(self.device)  # batches are cut on the GPU: no copy per step
        self.data = TrainingData(images, labels, batch_size=tc.batch_size * self.dist.world_size, seed=tc.seed,
                                 captions=config.model.text is not None, scale_augment=tc.scale_augment)  # fmt: skip
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.999),
            fused=self.device.type == "cuda",
        )  # fmt: skip
        self.noise = torch.Generator(self.device).manual_seed(tc.seed + 2)  # timesteps and epsilon

    def train_step(self) -> torch.Tensor:
        """One optimizer step on this rank's slice of the global batch; returns [loss, gradient norm]."""
        tc = self.config.train
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.config)
        # 1. the global batch: images and captions, timesteps t ~ U{0..T-1} and noise eps ~ N(0, I) (Ho et al. alg. 1)
        images, captions = self.data.batch(self.step)
        n = len(images)
        timesteps = torch.randint(0, self.schedule.num_timesteps, (n,), generator=self.noise, device=self.device)
        noise = torch.randn((n, 1, *images.shape[1:]), generator=self.noise, device=self.device)
        mine = slice(self.dist.rank * tc.batch_size, (self.dist.rank + 1) * tc.batch_size)
        images, timesteps, noise = images[mine], timesteps[mine], noise[mine]
        captions = captions[mine] if captions is not None else None
        x0 = to_model_range(images).to(self.device, non_blocking=True)
        if tc.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        # 2. the loss, then a clipped AdamW step and the EMA
        bf16 = self.device.type == "cuda" or (self.device.type == "cpu" and tc.cpu_bf16)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            context = self.model.encode_text(captions) if captions is not None else None
            diffusion = self.config.diffusion
            loss = training_loss(self.net, x0, timesteps, noise, self.schedule, objective=diffusion.objective,
                                 context=context, min_snr_gamma=diffusion.min_snr_gamma)  # fmt: skip
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.optimizer.step()
        update_ema(self.ema, self.model, self.step, tc.ema_decay)
        self.step += 1
        return torch.stack([loss.detach(), grad_norm.detach()])

    @torch.no_grad()
    def snapshot(self) -> torch.Tensor:
        """Samples from the EMA weights, always from the same noise (text models: digits 0-9 in turn): uint8 [N, H, W]."""
        tc = self.config.train
        prompts = None
        if self.config.model.text is not None:
            from .captions import DIGIT_WORDS

            prompts = [f"a handwritten {DIGIT_WORDS[i % 10]}" for i in range(tc.sample_num)]
        return self.pipe.sample(tc.sample_num, prompts=prompts, seed=SNAPSHOT_SEED, sampler=tc.sample_sampler,
                                steps=tc.sample_steps, guidance=tc.sample_guidance)  # fmt: skip

    def evaluate(self) -> dict[str, Any]:
        """``tinydiff eval`` figures of the EMA weights, small N: prompt accuracy (text models) and MNIST-FD."""
        from .evaluate import evaluate_pipeline

        tc = self.config.train
        report = evaluate_pipeline(self.pipe, num_per_digit=tc.eval_num_per_digit, sampler=tc.eval_sampler,
                                   steps=tc.eval_steps, data_dir=tc.data_dir, seed=SNAPSHOT_SEED)  # fmt: skip
        keys = ("accuracy", "mnist_fd", "mnist_fd_floor", "fd_ratio", "confidence", "nfe")
        return {f"eval_{k}": report[k] for k in keys if k in report}

    def model_folder_config(self, loss: float | None = None) -> ModelFolderConfig:
        return ModelFolderConfig(
            tinydiff_version=__version__, model=self.config.model, schedule=self.config.schedule,
            diffusion=self.config.diffusion,
            training={"step": self.step, "steps": self.config.train.steps, "run": self.run_dir.name,
                      "preset": self.config.preset, "loss": loss},
        )  # fmt: skip

    def save(self, loss: float | None) -> Path:
        """Write this step's checkpoint, then prune to ``keep_checkpoints`` (only once the new one is in place)."""
        state = {f"data/{k}": v for k, v in self.data.state().items()}
        state |= {"rng/torch": torch.get_rng_state(), "rng/noise": self.noise.get_state(),
                  "step": torch.tensor(self.step, dtype=torch.int64)}  # fmt: skip
        if self.device.type == "cuda":
            state["rng/cuda"] = torch.cuda.get_rng_state(self.device)
        target = checkpoint_path(self.run_dir, self.step)
        save_checkpoint(target, self.model_folder_config(loss), ema=self.ema, model=self.model,
                        optimizer=self.optimizer, state=state, device_type=self.device.type)  # fmt: skip
        keep = self.config.train.keep_checkpoints
        if keep:
            for _, old in list_checkpoints(self.run_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        return target

    def load(self, folder: Path) -> None:
        """Restore weights, EMA, optimizer, data order, RNGs and step from a checkpoint folder.

        Everything is checked before the run goes on: a checkpoint that is inconsistent (edited,
        damaged, or of another run) is an error naming it and the checkpoint to fall back on.
        """
        try:
            state = load_checkpoint(folder, ema=self.ema, model=self.model, optimizer=self.optimizer, device_type=self.device.type)
        except InconsistentCheckpoint as exc:
            raise TinyDiffError(inconsistent_checkpoint(folder, exc.reason)) from None
        except DeviceMismatch:
            raise
        except TinyDiffError as exc:  # a file that is missing, truncated or not what it claims
            raise TinyDiffError(f"{exc}; or {fallback_advice(folder)}") from None
        differs = _first_difference(read_model_config(folder), self.model_folder_config())
        if differs:
            raise TinyDiffError(inconsistent_checkpoint(folder, f"its config.json has {differs}, the run's config does not"))
        try:
            step = state["step"]
            if step.numel() != 1 or step.dtype.is_floating_point:
                raise ValueError(f"its step is a tensor of shape {tuple(step.shape)}")
            self.step = int(step)
            expected = parse_step_name(folder.name)
            if self.step < 0 or (expected is not None and self.step != expected):
                raise ValueError(f"it holds step {self.step} but is named {folder.name}")
            self.data.load_state({k[len("data/"):]: v for k, v in state.items() if k.startswith("data/")})
            torch.set_rng_state(state["rng/torch"])
            self.noise.set_state(state["rng/noise"])
            if "rng/cuda" in state and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng/cuda"], self.device)
        except KeyError as exc:
            raise TinyDiffError(inconsistent_checkpoint(folder, f"it lacks {exc}")) from None
        except (RuntimeError, ValueError, TypeError, IndexError, OverflowError) as exc:
            raise TinyDiffError(inconsistent_checkpoint(folder, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)) from None


def _first_difference(saved: ModelFolderConfig, wanted: ModelFolderConfig) -> str | None:
    """The first setting of the network, schedule or objective where a checkpoint differs from the run, as ``key = value``."""
    from .config import flat_config

    a = flat_config({k: getattr(saved, k).model_dump(mode="json") for k in ("model", "schedule", "diffusion")})
    b = flat_config({k: getattr(wanted, k).model_dump(mode="json") for k in ("model", "schedule", "diffusion")})
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{key} = {a.get(key)!r}"
    return None


def inconsistent_checkpoint(folder: Path, reason: str) -> str:
    """The message for a checkpoint that cannot be resumed: which one, why, and how to resume from the one before."""
    return f"checkpoint {folder} is inconsistent ({reason}); {fallback_advice(folder)}"


def fallback_advice(folder: Path) -> str:
    """How to resume from the checkpoint before ``folder`` (or from step 0 when there is none)."""
    earlier = [p for _, p in list_checkpoints(folder.parent.parent) if p != folder and (p / STATE_FILE).is_file()]
    if earlier:
        return f"move {folder.name} out of {folder.parent} to resume from {earlier[-1].name}"
    return f"move {folder.name} out of {folder.parent}, then --resume trains the run again from step 0"


def resumable_checkpoint(run_dir: Path, resume: bool) -> Path | None:
    """The checkpoint ``--resume`` continues from (None for a new run); refuses what cannot be started or resumed."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TinyDiffError(f"--run-dir {run_dir} is a file; pass a folder")
    ckpt_dir = run_dir / "checkpoints"
    if ckpt_dir.exists() and not ckpt_dir.is_dir():
        raise TinyDiffError(f"{ckpt_dir} is not a folder; the run directory is damaged (move that file away)")
    checkpoints = list_checkpoints(run_dir)
    if resume:
        resumable = [p for _, p in checkpoints if (p / STATE_FILE).is_file()]
        if not resumable and not checkpoints and (run_dir / "config.json").is_file():
            return None  # stopped before its first checkpoint: it trains again from step 0
        if not resumable:
            raise TinyDiffError(f"--resume: {run_dir} holds no checkpoint to resume from; start it without --resume")
        return resumable[-1]
    if checkpoints or (run_dir / "config.json").exists():
        raise TinyDiffError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --run-dir")
    return None


def train(
    config: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    command: list[str] | None = None,
    callback: Callback | None = None,
) -> TrainResult:
    """Train a DDPM on MNIST into ``run_dir``; ``resume`` continues from its newest checkpoint.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) every process calls this; rank 0 alone writes.
    SIGINT or SIGTERM stop the run after the current step with a checkpoint
    (``TrainResult.interrupted`` names the signal); a second one raises :class:`TrainingAborted`.
    """
    with Distributed.from_env() as dist:
        # rank 0 holds the run directory's lock: a second `tinydiff train` on it is refused, naming this process
        with run_lock(Path(run_dir)) if dist.is_main else contextlib.nullcontext():
            with StopSignals(debounce=1.0 if dist.enabled else 0.0) as signals:
                return _train(config, Path(run_dir), dist, resume=resume, command=command, callback=callback, signals=signals)


def _train(
    config: Config, run_dir: Path, dist: Distributed, *, resume: bool, command: list[str] | None, callback: Callback | None,
    signals: StopSignals,
) -> TrainResult:
    emit = (callback or (lambda event: None)) if dist.is_main else (lambda event: None)
    tc = config.train
    # under torchrun every rank makes these checks before any passes the rendezvous in Trainer, so rank 0 cannot write first
    resume_from = resumable_checkpoint(run_dir, resume)
    trainer = Trainer(config, run_dir, dist)  # validates names, architecture and data before anything is written
    if dist.enabled:  # the ranks made the check each on its own: they must have found the same checkpoint
        low, high = dist.spread(parse_step_name(resume_from.name) if resume_from is not None else -1, trainer.device)
        if low != high:
            raise TinyDiffError(
                f"the processes see different checkpoints in {run_dir} (steps {low} and {high}); "
                "put the run directory on a filesystem every node shares"
            )
    tracker = RunTracker(run_dir, trackers=tc.trackers) if dist.is_main else None  # refuses an unusable tracker
    if resume_from is not None:
        trainer.load(resume_from)
        if trainer.step > tc.steps:
            raise TinyDiffError(
                f"{run_dir} is at step {trainer.step}; --steps {tc.steps} would end before it. "
                f"Pass --steps above {trainer.step} to train on, or leave --steps out"
            )
        if trainer.step == tc.steps:  # nothing to train and nothing to record
            return TrainResult(run_dir, trainer.step, None, resume_from, already_done=True)
    if tracker:
        tracker.start(config.model_dump(mode="json"), command=command, resumed_from=trainer.step if resume else None)
    emit({"event": "start", "step": trainer.step, "total": tc.steps, "device": str(trainer.device),
          "parameters": count_parameters(trainer.model), "run_dir": str(run_dir), "world_size": dist.world_size,
          "restarted": resume and resume_from is None, "lr_note": lr_note(trainer.step, config, resume_from)})  # fmt: skip

    clock = TrainingClock(tc.max_minutes)
    last_loss: float | None = None
    last_checkpoint = resume_from
    running = torch.zeros(2, device=trainer.device)  # loss and gradient norm, summed since the last log line
    stopped: int | None = None
    while trainer.step < tc.steps:
        with clock.step():
            running += trainer.train_step()
        step = trainer.step
        # a signal stops every rank after the same step (a collective each step under torchrun: ranks agree)
        stopped = dist.agree_signal(signals.signum, trainer.device)
        if step == tc.steps:
            stopped = None  # the last step: the run ends as it would have anyway, with its final snapshot
        out_of_time = clock.out_of_time
        if clock.budget is not None and dist.enabled:  # ranks decide together, only at log steps (it syncs)
            out_of_time = step % tc.log_every == 0 and dist.all_agree(out_of_time, trainer.device)
        final = step == tc.steps or out_of_time or stopped is not None
        checkpoint_due = step % tc.checkpoint_every == 0 or final
        eval_due = bool(tc.eval_every) and (step % tc.eval_every == 0 or final) and stopped is None
        log_due = step % tc.log_every == 0 or final or eval_due

        if log_due or checkpoint_due:
            running = dist.mean(running)  # the loss over the global batch; identical on every rank
            if not bool(torch.isfinite(running).all()):  # never log or save divergence
                raise TinyDiffError(divergence_message(step, run_dir, last_checkpoint, config))
        if log_due:
            steps, seconds = clock.end_interval()
            loss, grad_norm = (running / steps).tolist()
            metrics = {"step": step, "loss": loss, "grad_norm": grad_norm, "lr": learning_rate(step - 1, config),
                       "img_per_s": steps * tc.batch_size * dist.world_size / seconds, "epoch": trainer.data.order.epoch,
                       "seconds": seconds}  # fmt: skip
            if eval_due and dist.is_main:
                start = time.perf_counter()
                with clock.pause():
                    metrics.update(trainer.evaluate())
                emit({"event": "eval", "step": step, "seconds": time.perf_counter() - start, **metrics})
            if tracker:
                tracker.log(metrics)
            last_loss = loss
            running.zero_()
            emit({"event": "log", "total": tc.steps, **metrics})
        emit({"event": "step", "step": step, "total": tc.steps, "loss": last_loss})

        with clock.pause():
            if tracker and (step % tc.sample_every == 0 or final) and stopped is None:  # a stop saves, it does not draw
                path = tracker.save_snapshot(step, trainer.snapshot().numpy())
                emit({"event": "snapshot", "step": step, "path": str(path)})
            if checkpoint_due:
                last_checkpoint = trainer.save(last_loss) if dist.is_main else checkpoint_path(run_dir, step)
                emit({"event": "checkpoint", "step": step, "path": str(last_checkpoint)})
        if final:
            break
    if tracker:
        tracker.finish()
    emit({"event": "end", "step": trainer.step, "loss": last_loss, "seconds": clock.trained, "interrupted": stopped})
    return TrainResult(run_dir, trainer.step, last_loss, last_checkpoint, interrupted=stopped)


def lr_note(step: int, config: Config, resume_from: Path | None) -> str | None:
    """What a raised ``--steps`` does to a cosine schedule, said when a run resumes past the total it was started with."""
    tc = config.train
    if resume_from is None or tc.lr_schedule != "cosine" or step <= tc.warmup_steps:
        return None
    try:
        saved_steps = int(read_model_config(resume_from).training.get("steps"))
    except (TinyDiffError, TypeError, ValueError):
        return None
    if saved_steps == tc.steps:
        return None
    before = learning_rate(step, config.model_copy(update={"train": tc.model_copy(update={"steps": saved_steps})}))
    return (
        f"--steps {saved_steps} -> {tc.steps}: the cosine learning-rate schedule is stretched over {tc.steps} steps, "
        f"so at step {step} the learning rate goes from {before:.3g} to {learning_rate(step, config):.3g}"
    )


def divergence_message(step: int, run_dir: Path, last_checkpoint: Path | None, config: Config) -> str:
    """A non-finite loss: where it happened, what was kept, and a command that continues with a lower learning rate."""
    lower = f"{config.train.lr / 10:g}"
    where = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was saved"
    then = "resumes from it" if last_checkpoint else "trains it again from step 0"
    return (
        f"the loss became non-finite by step {step}; {where}. "
        f"`tinydiff train --run-dir {run_dir} --resume --lr {lower}` {then} with a lower learning rate"
    )
