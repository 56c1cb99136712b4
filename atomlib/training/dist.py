"""Where a process sits in a training job: rank 0 of 1 alone, or one of several under torchrun.

torchrun tells each worker its place through RANK, LOCAL_RANK and WORLD_SIZE; `Dist` reads them
and wraps the three collective operations the trainer needs, so the same code runs alone (where
they do nothing) and under DDP. The device follows from the place: a DDP worker on a GPU takes
the GPU of its local rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from atomlib.config import ConfigError, TrainConfig
from atomlib.device import pick_device
from atomlib.errors import AtomError


@dataclass
class Dist:
    """Where this process sits in a torchrun job (rank 0 of 1 when there is none)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> "Dist":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                   int(os.environ.get("WORLD_SIZE", 1)))

    @property
    def ddp(self) -> bool:
        return self.world_size > 1

    @property
    def master(self) -> bool:
        return self.rank == 0

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.ddp:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)  # gloo has no AVG
        return t

    def gather(self, obj) -> list:
        if not self.ddp:
            return [obj]
        out = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def share(self, obj):
        """Rank 0's value of obj, on every rank."""
        if not self.ddp:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.ddp:
            torch.distributed.barrier()


def local_accumulation(global_steps: int, world_size: int) -> int:
    """Micro-steps per process: gradient_accumulation_steps is the global count (as in nanoGPT),
    so the global batch stays the same whatever the number of processes."""
    if global_steps % world_size:
        raise ConfigError(f"config key 'gradient_accumulation_steps' = {global_steps} must be divisible by the "
                          f"number of processes ({world_size}); set it to a multiple of {world_size}, e.g. "
                          f"--set gradient_accumulation_steps={world_size * max(1, round(global_steps / world_size))}.")
    return global_steps // world_size


def device_for(cfg: TrainConfig, dist: Dist) -> torch.device:
    """The device this process trains on: cfg.device alone; under DDP CUDA (this local rank's GPU) or CPU."""
    if not dist.ddp:
        return pick_device(cfg.device)
    pref = cfg.device
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"  # DDP does not run on MPS
    dev = pick_device(pref)
    if dev.type == "mps":
        raise AtomError("device 'mps' cannot run several processes (DDP); use --nproc 1 or device=cpu.")
    if dev.type == "cuda":
        dev = torch.device("cuda", dev.index if dev.index is not None else dist.local_rank)
        torch.cuda.set_device(dev)
    return dev
