"""Distributed data parallel (DDP) set-up and teardown, for runs launched by ``torchrun``.

    torchrun --standalone --nproc_per_node 4 -m tinydiff train --run-dir runs/ddp

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them this is
rank 0 of 1 and every method is a no-op. Each of N processes trains on its slice of
one global batch, and rank 0 alone logs, draws snapshots and writes checkpoints
(see :mod:`tinydiff.train`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from .errors import TinyDiffError


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

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module the training step calls: ``model`` itself, or DDP around it (rank 0's weights are broadcast)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

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

    def all_agree(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when any rank's ``flag`` is True (a collective: every rank must call it)."""
        if not self.enabled:
            return flag
        return bool(self.mean(torch.tensor([float(flag)], device=device)) > 0)

    def spread(self, value: int, device: torch.device) -> tuple[int, int]:
        """The lowest and highest ``value`` over all ranks (a collective when distributed)."""
        if not self.enabled:
            return value, value
        import torch.distributed as dist

        both = torch.tensor([-float(value), float(value)], device=device)
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        return int(-both[0].item()), int(both[1].item())

    def agree_signal(self, signum: int | None, device: torch.device) -> int | None:
        """The stop signal any rank received (the highest number when several did), the same on every rank
        (a collective when distributed: every rank calls it after every step)."""
        if not self.enabled:
            return signum
        import torch.distributed as dist

        value = torch.tensor([float(signum or 0)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return int(value.item()) or None

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over all ranks (the value itself when not distributed)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value)
        return value / self.world_size

    def __enter__(self) -> "Distributed":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(clean=exc_type is None)  # after a failure the other ranks may be gone: no barrier then
