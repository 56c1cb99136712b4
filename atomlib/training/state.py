"""The training state: what a step changes and a checkpoint keeps, and what stays fixed around it.

`TrainSetup` is fixed for a run (config, processes, device, data); `TrainState` is what moves
(weights, optimizer moments, loss scale, the data generator, the step, the best loss, the
clock). A checkpoint is the state plus every rank's RNG, written through model/checkpoint.py;
`restore` puts all of it back, so a resumed run draws the same batches and dropout masks and
logs the same losses as one that never stopped.

The model comes from one of three places (`build_model`): a fresh GPT of the config's shape, a
GPT-2 (init_from), or the checkpoint being resumed, whose shape and switches win over the config.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from atomlib.config import GPT2_NAMES, ConfigError, TrainConfig
from atomlib.device import ThreadChoice, describe, measure_peak_flops
from atomlib.errors import AtomError
from atomlib.model import checkpoint as ckpt
from atomlib.model.gpt import GPT, GPTConfig
from atomlib.model.layout import LAYOUT_KEYS
from atomlib.training.dist import Dist
from atomlib.training.optim import MuonAdamW, build_optimizer

# keys that fix the model's weights and function (architecture switches included); a resumed run keeps them
MODEL_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "bias", *LAYOUT_KEYS)


@dataclass
class TrainSetup:
    """What stays fixed for the whole run."""

    cfg: TrainConfig  # with the model's real shape and switches (build_model)
    run_dir: Path
    dist: Dist
    device: torch.device
    dtype: torch.dtype
    local_gas: int  # this rank's micro-steps per optimizer step
    data: dict  # split -> memory-mapped tokens
    data_dir: Path
    meta: dict  # the dataset's meta.json
    tokenizer: dict  # what state.json records to rebuild the tokenizer
    peak_flops: float | None  # rank 0: the machine's matmul FLOP/s, for MFU
    threads: ThreadChoice

    @property
    def tokens_per_step(self) -> int:
        """Tokens of one optimizer step, all ranks together."""
        return self.cfg.gradient_accumulation_steps * self.cfg.batch_size * self.cfg.block_size


@dataclass
class TrainState:
    """What a training step changes and a checkpoint keeps."""

    model: GPT  # the bare model: parameters, checkpoints, MFU
    optimizer: torch.optim.Optimizer | MuonAdamW
    scaler: torch.amp.GradScaler
    data_gen: torch.Generator  # the data position: the same on every rank
    train_model: torch.nn.Module  # what backward runs through (compiled and/or DDP-wrapped)
    eval_model: torch.nn.Module  # compiled but never DDP-wrapped: evaluation syncs no gradients
    step: int = 0
    best_val: float | None = None
    tokens: int = 0  # trained on so far, all ranks together
    elapsed_before: float = 0.0  # seconds trained by the processes this run resumed from
    started: float = field(default_factory=time.time)  # when this process's clock started

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started


# --- the model -----------------------------------------------------------------------------


def check_init_from(cfg: TrainConfig) -> None:
    if cfg.init_from in ("scratch", *GPT2_NAMES):
        return
    if not Path(cfg.init_from).expanduser().is_dir():
        raise ConfigError(f"config key 'init_from' = {cfg.init_from!r} is neither scratch, a GPT-2 name "
                          f"({', '.join(GPT2_NAMES)}) nor an existing folder; fix the name or the path.")


def build_model(cfg: TrainConfig, meta: dict, saved: dict | None) -> tuple[GPT, TrainConfig]:
    """(model, cfg): a fresh GPT, GPT-2 weights (init_from), or the model of the checkpoint being
    resumed (saved: its state.json). The returned cfg carries the model's real shape and
    switches, so state.json tells the truth."""
    if saved is not None:
        return _resumed_model(cfg, meta, saved)
    if cfg.init_from == "scratch":
        mc = GPTConfig(vocab_size=meta["vocab_size"], dropout=cfg.dropout, **{k: getattr(cfg, k) for k in MODEL_KEYS})
        return GPT(mc), cfg
    # GPT-2 weights only make sense on GPT-2's own BPE tokens
    if meta.get("tokenizer") != "gpt2":
        raise AtomError(f"init_from={cfg.init_from} needs a GPT-2 BPE dataset (vocab 50257) but dataset "
                        f"'{cfg.dataset}' is {meta.get('tokenizer')}-level (vocab {meta.get('vocab_size')}); prepare "
                        "one with `atom prepare --tokenizer gpt2` and set dataset= to it.")
    model = GPT.from_pretrained(cfg.init_from, {"dropout": cfg.dropout})
    mc = model.config
    if mc.vocab_size != meta["vocab_size"]:
        raise AtomError(f"init_from={cfg.init_from} has vocab_size {mc.vocab_size} but dataset '{cfg.dataset}' has "
                        f"{meta['vocab_size']}; use a GPT-2 BPE dataset.")
    if cfg.block_size > mc.block_size:
        raise ConfigError(f"config key 'block_size' = {cfg.block_size} is above the {mc.block_size} positions "
                          f"{cfg.init_from} has; set block_size <= {mc.block_size}.")
    if cfg.block_size < mc.block_size:
        model.crop_block_size(cfg.block_size)  # shorter context: keep the first positions
    return model, dataclasses.replace(cfg, **{k: getattr(mc, k) for k in MODEL_KEYS})


def _resumed_model(cfg: TrainConfig, meta: dict, saved: dict) -> tuple[GPT, TrainConfig]:
    shape = {**dataclasses.asdict(GPTConfig()), **saved["model_config"]}  # runs from before the switches
    if cfg.init_from == "scratch":
        for k in MODEL_KEYS:
            if getattr(cfg, k) != shape[k]:
                raise AtomError(f"the checkpoint being resumed was trained with {k}={shape[k]!r} but the config "
                                f"says {getattr(cfg, k)!r}; resume with the run's own config or train into a new --out.")
    if shape["vocab_size"] != meta["vocab_size"]:
        raise AtomError(f"the checkpoint has vocab_size {shape['vocab_size']} but dataset '{cfg.dataset}' has "
                        f"{meta['vocab_size']}; resume on the dataset the run was trained on.")
    cfg = dataclasses.replace(cfg, **{k: shape[k] for k in MODEL_KEYS})
    return GPT(GPTConfig(**{**shape, "dropout": cfg.dropout})), cfg


def peak_flops(device, dtype, saved: dict | None) -> float | None:
    """The machine's matmul FLOP/s for MFU: ATOM_PEAK_FLOPS, else the run's own figure, else measured now."""
    env = os.environ.get("ATOM_PEAK_FLOPS")
    if env:
        try:
            return float(env)
        except ValueError:
            raise AtomError(f"ATOM_PEAK_FLOPS={env!r} is not a number of FLOP/s (e.g. 3.12e14).") from None
    if saved is not None and saved.get("peak_flops"):
        return saved["peak_flops"]  # measured once per run, at its start
    return measure_peak_flops(device, dtype)


# --- the state -----------------------------------------------------------------------------


def new_state(model: GPT, cfg: TrainConfig, device: torch.device, dtype: torch.dtype, float32_ns: bool) -> TrainState:
    """Step 0: the optimizer at its peak rates, a loss scaler (fp16 only), the data generator at its seed."""
    optimizer = build_optimizer(model, cfg, device, float32_ns=float32_ns)
    scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))  # fp16 needs loss scaling
    data_gen = torch.Generator().manual_seed(cfg.seed)
    return TrainState(model, optimizer, scaler, data_gen, train_model=model, eval_model=model)


def restore(state: TrainState, saved: dict, tensors: dict, opt_tensors: dict, rank: int, seed: int) -> None:
    """Put back everything the next step depends on: weights, optimizer moments, loss scale, the
    data generator, the counters, and this rank's RNG (its dropout masks)."""
    ckpt.restore_model(state.model, tensors)
    ckpt.restore_optimizer(state.optimizer, opt_tensors, saved["optimizer"])
    ckpt.set_generator_state(state.data_gen, saved["data"]["generator"])
    if saved.get("scaler") and state.scaler.is_enabled():
        state.scaler.load_state_dict(saved["scaler"])
    ranks = saved.get("rng_ranks") or [saved["rng"]]
    if rank < len(ranks):
        ckpt.set_rng_state(ranks[rank])
    else:  # resumed on more processes than saved: a fresh dropout stream for the new ranks
        torch.manual_seed(seed + rank + saved["step"])
    state.step, state.best_val = saved["step"], saved.get("best_val_loss")
    state.elapsed_before, state.tokens = saved.get("elapsed_s", 0.0), saved.get("tokens", 0)


def checkpoint_state(state: TrainState, setup: TrainSetup, losses: dict, rngs: list, wandb_id: str | None) -> dict:
    """state.json of a checkpoint at this step: everything but the tensors (rngs: every rank's RNG)."""
    cfg, dist = setup.cfg, setup.dist
    st = {
        "step": state.step, "config": cfg.to_dict(), "model_config": dataclasses.asdict(state.model.config),
        "best_val_loss": state.best_val, "train_loss": losses["train"], "val_loss": losses["val"],
        "tokenizer": setup.tokenizer, "dataset": str(setup.data_dir),
        "dataset_meta": {k: v for k, v in setup.meta.items() if k not in ("chars", "bpe")},  # (in "tokenizer")
        "rng": rngs[0], **({"rng_ranks": rngs} if dist.ddp else {}),
        "data": {"generator": ckpt.generator_state(state.data_gen)},
        "scaler": state.scaler.state_dict() if state.scaler.is_enabled() else None,
        "elapsed_s": state.elapsed(), "tokens": state.tokens, "peak_flops": setup.peak_flops,
        "num_params": state.model.get_num_params(),
        "threads": setup.threads.choice if setup.threads.decided else None,
        "device": describe(setup.device, setup.dtype), "world_size": dist.world_size,
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if wandb_id is not None:
        st["wandb_id"] = wandb_id
    return st
