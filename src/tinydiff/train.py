"""The training loop: one function, UI-free, reporting progress through a callback.

    tinydiff train                                   # stage3 preset, MNIST, tracked in runs/<name>
    tinydiff train --preset stage1 --steps 2000      # the milestone story, stage by stage
    tinydiff train --run-dir runs/x --resume         # continue from the newest checkpoint

AdamW with linear warm-up and cosine decay, gradient clipping, an EMA of the
weights (what sampling uses), bf16 autocast on CUDA. Model init, data order and
noise each come from their own seeded generator, all saved in the checkpoint,
so a resumed run continues exactly.

Distributed data parallel (DDP): launched by ``torchrun`` (``RANK``/``WORLD_SIZE`` set), each
of N processes takes its slice of one global batch of N x ``batch_size`` images, drawn with
the same noise and captions as a single process would draw them, so N processes train like
one process with batch N x B. Rank 0 alone logs, draws snapshots and writes checkpoints.
"""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from . import __version__
from .checkpoint import (
    STATE_FILE,
    ModelFolderConfig,
    list_checkpoints,
    model_folder_files,
    read_safetensors,
    step_dir_name,
    write_folder_atomic,
)
from .config import Config
from .data import BatchSampler, load_mnist, to_model_range, to_uint8
from .diffusion import Denoiser, training_loss
from .errors import TinyDiffError
from .images import make_grid
from .nn.unet import UNet, count_parameters
from .pipeline import resolve_device
from .plugins import get_sampler
from .schedules import NoiseSchedule
from .tracking import RunTracker

Callback = Callable[[dict[str, Any]], None]
SNAPSHOT_SEED = 1234  # the same starting noise for every snapshot of every run
SNAPSHOT_GUIDANCE = 3.0  # guidance for text models' snapshots: strong, so a young model's digits are readable
SCALE_RANGE = (0.6, 1.3)  # train.scale_augment: a 20-pixel MNIST digit becomes 12 to 26 pixels tall


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    loss: float | None
    checkpoint: Path | None


def learning_rate(step: int, cfg: Config) -> float:
    """Linear warm-up to ``lr``, then constant or cosine decay to ``min_lr_ratio * lr``."""
    t = cfg.train
    if t.warmup_steps and step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.lr_schedule == "constant":
        return t.lr
    progress = min(1.0, (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps))
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    """EMA of weights with a warm-up, min(decay, (1 + n) / (10 + n)) (Tarvainen & Valpola 2017)."""
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - d)  # one fused kernel per group
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


@dataclass
class Distributed:
    """This process's place in a ``torchrun`` launch (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Distributed":
        import os

        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise TinyDiffError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)") from None
        if world < 1 or not 0 <= rank < world:
            raise TinyDiffError(f"RANK {rank} does not fit WORLD_SIZE {world}")
        return cls(rank, world, local)

    def init(self, device: torch.device) -> torch.device:
        """Join the process group (NCCL on CUDA, gloo on CPU); returns this rank's device."""
        if not self.enabled:
            return device
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return device

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self, *, clean: bool = True) -> None:
        """Leave the process group. After a clean finish every rank first waits for the others (so none
        leaves before rank 0's last checkpoint) and drops its DDP wrapper, so no collective or gloo worker
        is still alive when the group goes (without this, a rank that leaves early can abort with
        "terminate called without an active exception")."""
        if not self.enabled:
            return
        import gc

        import torch.distributed as dist

        if not dist.is_initialized():
            return
        if clean:
            self.barrier()
        gc.collect()
        dist.destroy_process_group()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over all ranks (the value itself when not distributed)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value)
        return value / self.world_size


class Trainer:
    """Holds the state of one run: network, EMA, optimizer, data order, RNGs."""

    def __init__(self, config: Config, run_dir: Path, dist: Distributed | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.dist = dist or Distributed()
        t = config.train
        self.device = self.dist.init(resolve_device(t.device))
        get_sampler("ddpm")  # fail early if the snapshot (or evaluation) sampler is missing
        if t.eval_every:
            get_sampler(t.eval_sampler)
        self.schedule = NoiseSchedule.from_name(config.schedule.name, config.schedule.num_steps, **config.schedule.options)
        torch.manual_seed(t.seed)
        self.model = UNet(config.model).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net: torch.nn.Module = self.model  # what the training step calls: the model, or DDP around it
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)  # rank 0's init is broadcast
        if t.compile:
            self.net = torch.compile(self.net)
        self.images, self.labels = load_mnist(t.data_dir, split="train")  # one uint8 tensor: 47 MB, never a loader stall
        self.captions = None
        if config.model.text is not None:  # milestone 4: a fresh caption for each image each time it is seen
            from .captions import CaptionGenerator, style_codes

            self.captions = CaptionGenerator()
            self.style = style_codes(self.images)
        if self.device.type == "cuda":
            self.images = self.images.to(self.device)  # batches are cut on the GPU: no copy per step
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay, betas=(0.9, 0.999),
            fused=self.device.type == "cuda",
        )  # fmt: skip
        if t.batch_size * self.dist.world_size > len(self.images):
            per = f" x {self.dist.world_size} processes" if self.dist.enabled else ""
            raise TinyDiffError(f"--batch-size {t.batch_size}{per} is larger than the {len(self.images)} training images")
        # one global batch, the same on every rank; each rank trains on its own slice of it
        self.batches = BatchSampler(len(self.images), t.batch_size * self.dist.world_size, seed=t.seed + 1)
        self.noise = torch.Generator(self.device).manual_seed(t.seed + 2)
        self.step = 0

    # -- one step ---------------------------------------------------------------
    def draw_batch(self) -> tuple[torch.Tensor, list[str] | None, torch.Tensor, torch.Tensor]:
        """This rank's uint8 images, captions (text models), timesteps and noise for the current step.

        Everything is drawn for the whole global batch from generators seeded by the run (data
        order, noise) or by the step (captions, scale augmentation), then sliced for this rank:
        N processes see what one process with N times the batch would, and resume is exact.
        """
        t = self.config.train
        global_idx = self.batches.next()
        n = len(global_idx)
        timesteps = torch.randint(0, self.schedule.num_steps, (n,), generator=self.noise, device=self.device)
        noise = torch.randn((n, 1, *self.images.shape[1:]), generator=self.noise, device=self.device)
        images = self.images[global_idx.to(self.images.device)]
        codes = self.style[global_idx] if self.captions is not None else None
        if t.scale_augment > 0:  # rescale some images, and re-measure their style so "small"/"large" are true
            from .data import rescale_images

            gen = torch.Generator().manual_seed(t.seed * 1_000_003 + self.step + 500_000_000)
            chosen = torch.rand(n, generator=gen) < t.scale_augment
            factors = torch.empty(n).uniform_(SCALE_RANGE[0], SCALE_RANGE[1], generator=gen)
            if chosen.any():
                scaled = rescale_images(images[chosen.to(images.device)].cpu(), factors[chosen])
                images = images.clone()
                images[chosen.to(images.device)] = scaled.to(images.device)
                if codes is not None:
                    from .captions import style_codes

                    codes = codes.clone()
                    codes[chosen] = style_codes(scaled)
        captions = None
        if self.captions is not None:  # seeded by step, so a resumed run draws the same captions
            rng = random.Random(t.seed * 1_000_003 + self.step)
            captions = self.captions.captions_for_batch(self.labels[global_idx], codes, rng)
        mine = slice(self.dist.rank * t.batch_size, (self.dist.rank + 1) * t.batch_size)
        return images[mine], (captions[mine] if captions is not None else None), timesteps[mine], noise[mine]

    def train_step(self) -> torch.Tensor:
        t = self.config.train
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.config)
        images, captions, timesteps, noise = self.draw_batch()
        x0 = to_model_range(images).to(self.device, non_blocking=True)
        if t.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            context = self.model.encode_text(captions) if captions is not None else None
            loss = training_loss(
                self.net, x0, timesteps, noise, self.schedule, objective=self.config.diffusion.objective, context=context,
                min_snr_gamma=self.config.diffusion.min_snr_gamma,
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        update_ema(self.ema, self.model, self.step, t.ema_decay)
        self.step += 1
        return torch.stack([loss.detach(), grad_norm.detach()])

    # -- snapshots and checkpoints -----------------------------------------------
    @torch.no_grad()
    def snapshot(self) -> torch.Tensor:
        """Samples from the EMA weights, always from the same noise: uint8 [N, H, W]."""
        cfg, t = self.config.model, self.config.train
        gen = torch.Generator("cpu").manual_seed(SNAPSHOT_SEED)
        x_T = torch.randn((t.sample_num, cfg.in_channels, cfg.image_size, cfg.image_size), generator=gen).to(self.device)
        context = uncond = None
        if self.config.model.text is not None:  # digits 0-9 in turn, so each snapshot asks for every digit
            from .captions import DIGIT_WORDS

            context = self.ema.encode_text([f"a handwritten {DIGIT_WORDS[i % 10]}" for i in range(t.sample_num)])
            uncond = self.ema.encode_text([""] * t.sample_num)
        denoiser = Denoiser(self.ema, self.schedule, objective=self.config.diffusion.objective,
                            context=context, uncond_context=uncond, guidance=SNAPSHOT_GUIDANCE)  # fmt: skip
        sampler_gen = torch.Generator(self.device).manual_seed(SNAPSHOT_SEED + 1)
        x0 = get_sampler("ddpm")(denoiser, x_T, self.schedule, steps=t.sample_steps, generator=sampler_gen)
        return to_uint8(x0)

    def evaluate(self) -> dict[str, Any]:
        """``tinydiff eval`` figures of the EMA weights, small N: prompt accuracy (text models) and MNIST-FD."""
        from .evaluate import evaluate_pipeline
        from .pipeline import Pipeline

        t = self.config.train
        pipe = Pipeline(self.model_folder_config(None), self.ema, path=self.run_dir)
        report = evaluate_pipeline(pipe, num_per_digit=t.eval_num_per_digit, sampler=t.eval_sampler,
                                   steps=t.eval_steps, data_dir=t.data_dir, seed=SNAPSHOT_SEED)  # fmt: skip
        keys = ("accuracy", "mnist_fd", "mnist_fd_floor", "fd_ratio", "nfe")
        return {f"eval_{k}": report[k] for k in keys if k in report}

    def model_folder_config(self, loss: float | None) -> ModelFolderConfig:
        return ModelFolderConfig(
            tinydiff_version=__version__,
            model=self.config.model,
            schedule=self.config.schedule,
            diffusion=self.config.diffusion,
            training={"step": self.step, "steps": self.config.train.steps, "run": self.run_dir.name,
                      "preset": self.config.preset, "loss": loss},
        )  # fmt: skip

    def training_state(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Everything beyond the EMA weights that an exact resume needs, as flat tensors plus JSON metadata."""
        tensors: dict[str, torch.Tensor] = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        opt = self.optimizer.state_dict()
        for index, state in opt["state"].items():
            for key, value in state.items():
                tensors[f"optim/{index}/{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
        for key, value in self.batches.state().items():
            tensors[f"data/{key}"] = value
        tensors["rng/torch"] = torch.get_rng_state()
        tensors["rng/noise"] = self.noise.get_state()
        if self.device.type == "cuda":
            tensors["rng/cuda"] = torch.cuda.get_rng_state(self.device)
        tensors["step"] = torch.tensor(self.step, dtype=torch.int64)
        # one metadata key, so the file is byte-reproducible (safetensors orders several keys arbitrarily)
        meta = {"tinydiff": json.dumps({"format": 1, "device_type": self.device.type, "param_groups": opt["param_groups"]})}
        return tensors, meta

    def save_checkpoint(self, loss: float | None) -> Path:
        from safetensors.torch import save

        tensors, meta = self.training_state()
        tokenizer = self.model.text_encoder.tokenizer if self.model.text_encoder is not None else None
        files = model_folder_files(self.model_folder_config(loss), self.ema.state_dict(), tokenizer)
        files[STATE_FILE] = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=meta)
        target = self.run_dir / "checkpoints" / step_dir_name(self.step)
        write_folder_atomic(target, files)
        keep = self.config.train.keep_checkpoints
        if keep:  # prune only after the new one is safely in place
            for _, old in list_checkpoints(self.run_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        return target

    def load_checkpoint(self, folder: Path) -> None:
        """Restore weights, EMA, optimizer, data order and RNGs from a checkpoint folder."""
        from safetensors import safe_open

        state = read_safetensors(folder / STATE_FILE)
        ema = read_safetensors(folder / "model.safetensors")
        try:
            self.model.load_state_dict({k[len("model/"):]: v for k, v in state.items() if k.startswith("model/")})
            self.ema.load_state_dict(ema)
            with safe_open(str(folder / STATE_FILE), framework="pt") as f:
                meta = json.loads((f.metadata() or {})["tinydiff"])
            saved_device = meta.get("device_type", "cpu")
            if saved_device != self.device.type:
                raise TinyDiffError(
                    f"this run trained on {saved_device}; resume it with --device {saved_device} "
                    "(its random-number state belongs to that device)"
                )
            param_groups = meta["param_groups"]
            opt_state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in state.items():
                if key.startswith("optim/"):
                    _, index, name = key.split("/", 2)
                    opt_state.setdefault(int(index), {})[name] = value
            self.optimizer.load_state_dict({"state": opt_state, "param_groups": param_groups})
            self.batches.load_state({k[len("data/"):]: v for k, v in state.items() if k.startswith("data/")})
            torch.set_rng_state(state["rng/torch"])
            self.noise.set_state(state["rng/noise"])
            if "rng/cuda" in state and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng/cuda"], self.device)
            self.step = int(state["step"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise TinyDiffError(f"cannot resume from {folder}: {str(exc).splitlines()[0]}; it does not match this config") from None


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
    """
    dist = Distributed.from_env()
    clean = False
    try:
        result = _train(config, Path(run_dir), dist, resume=resume, command=command, callback=callback)
        clean = True
        return result
    finally:
        dist.close(clean=clean)  # after a failure the other ranks may be gone: no barrier then


def _train(
    config: Config, run_dir: Path, dist: Distributed, *, resume: bool, command: list[str] | None, callback: Callback | None
) -> TrainResult:
    emit = (callback or (lambda event: None)) if dist.is_main else (lambda event: None)
    t = config.train
    checkpoints = list_checkpoints(run_dir)
    if resume:
        resumable = [(s, p) for s, p in checkpoints if (p / STATE_FILE).is_file()]
        if not resumable:
            raise TinyDiffError(f"--resume: {run_dir} holds no checkpoint to resume from; start it without --resume")
    elif checkpoints or (run_dir / "config.json").exists():
        raise TinyDiffError(f"{run_dir} already holds a run; pass --resume to continue it, or choose another --run-dir")

    # validates names, architecture and data before writing anything; under torchrun, every rank has
    # made the checks above before any passes the rendezvous in here, so rank 0 cannot write first
    trainer = Trainer(config, run_dir, dist)
    tracker = RunTracker(run_dir) if dist.is_main else None
    if resume:
        trainer.load_checkpoint(resumable[-1][1])
        if tracker:
            tracker.truncate_metrics(trainer.step)
    if tracker:
        tracker.start(config.model_dump(mode="json"), command=command, resumed_from=trainer.step if resume else None)

    emit({"event": "start", "step": trainer.step, "total": t.steps, "device": str(trainer.device),
          "parameters": count_parameters(trainer.model), "run_dir": str(run_dir), "world_size": dist.world_size})  # fmt: skip
    last_loss: float | None = None
    last_checkpoint: Path | None = resumable[-1][1] if resume else None
    running = torch.zeros(2, device=trainer.device)
    interval_steps, interval_start, paused = 0, time.perf_counter(), 0.0
    budget = t.max_minutes * 60 if t.max_minutes else None  # seconds of training in this invocation
    trained = 0.0
    images_per_step = t.batch_size * dist.world_size
    while trainer.step < t.steps:
        step_start = time.perf_counter()
        running += trainer.train_step()
        trained += time.perf_counter() - step_start
        interval_steps += 1
        step = trainer.step
        out_of_time = budget is not None and trained >= budget
        if budget is not None and dist.enabled:  # ranks decide together, only at log steps (it syncs)
            flag = float(out_of_time)
            out_of_time = step % t.log_every == 0 and bool(dist.mean(torch.tensor([flag], device=trainer.device)) > 0)
        final = step == t.steps or out_of_time
        checkpoint_due = step % t.checkpoint_every == 0 or final
        eval_due = bool(t.eval_every) and (step % t.eval_every == 0 or final)
        log_due = step % t.log_every == 0 or final or eval_due
        if log_due or checkpoint_due:
            running = dist.mean(running)  # the loss over the global batch; identical on every rank
            if not bool(torch.isfinite(running).all()):  # never log or save divergence
                where = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was saved"
                raise TinyDiffError(f"the loss became non-finite by step {step}; {where}. Lower --lr and resume")
        if log_due:
            loss, grad_norm = (running / interval_steps).tolist()
            elapsed = time.perf_counter() - interval_start - paused  # snapshots and checkpoints are not training
            metrics = {"step": step, "loss": loss, "grad_norm": grad_norm, "lr": learning_rate(step - 1, config),
                       "img_per_s": interval_steps * images_per_step / max(elapsed, 1e-9), "epoch": trainer.batches.epoch}  # fmt: skip
            if eval_due and dist.is_main:
                pause = time.perf_counter()
                metrics.update(trainer.evaluate())
                paused_eval = time.perf_counter() - pause
                emit({"event": "eval", "step": step, "seconds": paused_eval, **metrics})
            if tracker:
                tracker.log(metrics)
            last_loss = loss
            running.zero_()
            interval_steps, interval_start, paused = 0, time.perf_counter(), 0.0
            emit({"event": "log", **metrics})
        emit({"event": "step", "step": step, "total": t.steps, "loss": last_loss})
        pause_start = time.perf_counter()
        if tracker and (step % t.sample_every == 0 or final):
            images = trainer.snapshot().numpy()
            path = tracker.save_snapshot(step, make_grid(images))
            emit({"event": "snapshot", "step": step, "path": str(path)})
        if checkpoint_due:
            target = run_dir / "checkpoints" / step_dir_name(step)
            if dist.is_main:
                target = trainer.save_checkpoint(last_loss)
                emit({"event": "checkpoint", "step": step, "path": str(target)})
            last_checkpoint = target
        paused += time.perf_counter() - pause_start
        if final:
            break
    emit({"event": "end", "step": trainer.step, "loss": last_loss, "seconds": trained})
    return TrainResult(run_dir, trainer.step, last_loss, last_checkpoint)
