"""Batches: random windows cut from the memory-mapped token array, and the loss on fixed ones.

A window is block_size + 1 tokens: the inputs and, shifted by one, their next-token targets.
Each optimizer step draws its whole global batch (gradient_accumulation_steps x batch_size
window offsets) from one seeded generator, and each rank keeps its own slice of it, so the data
a run sees does not depend on how many processes train it. The evaluation batches come from a
fixed seed per split, so the same windows are measured at every evaluation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from atomlib.config import TrainConfig
from atomlib.device import autocast
from atomlib.errors import AtomError
from atomlib.training.dist import Dist

EVAL_SEEDS = {"train": 1, "val": 2}  # offsets from cfg.seed for the fixed evaluation batches


def windows(data: np.ndarray, offsets: torch.Tensor, block_size: int, device: torch.device):
    """Inputs and next-token targets (B, block_size) starting at each offset into the token array."""
    rows = [np.asarray(data[i:i + block_size + 1], dtype=np.int64) for i in offsets.tolist()]
    xy = torch.from_numpy(np.stack(rows))
    x, y = xy[:, :-1], xy[:, 1:]
    if device.type == "cuda":  # pinned memory lets the copy overlap with compute
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.contiguous().to(device), y.contiguous().to(device)


def rank_offsets(gen: torch.Generator, n_tokens: int, cfg: TrainConfig, dist: Dist) -> torch.Tensor:
    """This rank's window offsets (local micro-steps, batch_size) of the next global batch: every
    rank draws the whole batch from the same generator and keeps its own rows."""
    ix = torch.randint(n_tokens - cfg.block_size, (cfg.gradient_accumulation_steps, cfg.batch_size), generator=gen)
    local = cfg.gradient_accumulation_steps // dist.world_size
    return ix[dist.rank * local:(dist.rank + 1) * local]


def check_split(data, split: str, folder: Path, block_size: int) -> None:
    if len(data) <= block_size + 1:
        raise AtomError(f"the {split} split of {folder} has only {len(data)} tokens, too few for block_size "
                        f"{block_size}; lower block_size or use a larger dataset.")


@torch.no_grad()
def estimate_loss(model, data: dict, cfg: TrainConfig, device, dtype, dist: Dist) -> dict:
    """Mean loss of each split on eval_iters fixed batches: the same windows at every evaluation (a
    fixed seed per split), so changes in the curve are the model's, not the sample's. The batches
    are shared out among the ranks and the sums all-reduced."""
    model.eval()
    out = {}
    for split, tokens in data.items():
        gen = torch.Generator().manual_seed(cfg.seed + EVAL_SEEDS[split])
        ix = torch.randint(len(tokens) - cfg.block_size, (cfg.eval_iters, cfg.batch_size), generator=gen)
        total = torch.zeros((), device=device, dtype=torch.float64)
        for k in range(dist.rank, cfg.eval_iters, dist.world_size):
            x, y = windows(tokens, ix[k], cfg.block_size, device)
            with autocast(device, dtype):
                _, loss = model(x, y)
            total += loss.double()
        out[split] = dist.sum(total).item() / cfg.eval_iters
    model.train()
    return out
