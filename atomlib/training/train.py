"""The trainer: a TrainConfig in, a run folder out; one process, or many under torchrun (DDP).

    atom train --config cpu                        # one process on CPU, CUDA or MPS (device auto)
    atom train --config darklyrics --nproc 4       # 4 GPUs here: torchrun underneath, NCCL
    python -m atomlib.training.train --config ...           # what each torchrun worker runs

The loop is nanoGPT's: random windows from the memory-mapped token array, gradient
accumulation, AdamW, linear warmup then cosine decay, gradient clipping, mixed precision.
Two things are added.

Exact resumption. A checkpoint holds the weights, the AdamW moments, every rank's RNG (for
dropout) and the state of the generator that draws the data windows, so a run killed at any
instant and resumed logs the same losses as one that never stopped. Rows of metrics.jsonl
written after the checkpoint are dropped on resume: the curve has no gaps and no repeats.

Batches that do not depend on the number of processes. Each optimizer step draws its whole
global batch (gradient_accumulation_steps x batch_size windows) from one seeded generator,
and each rank keeps its own slice of it. So --nproc changes the speed, not the run.

Only rank 0 touches the file system (run folder, checkpoints, metrics, console log).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from atomlib.model import checkpoint as ckpt
from atomlib.config import (GPT2_NAMES, ConfigError, TrainConfig, check_overrides, load_config, make_config,
                            parse_overrides, validate)
from atomlib.device import ThreadChoice, autocast, describe, measure_peak_flops, pick_device, pick_dtype, synchronize
from atomlib.errors import AtomError
from atomlib.training.optim import build_optimizer, set_lr
from atomlib.paths import runs_dir, write_atomic
from atomlib.data.tokenizer import tokenizer_meta

# keys that fix the model's weights and function (architecture switches included); a resumed run keeps them
MODEL_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "pos_emb", "norm", "qk_norm", "mlp",
              "tie_embeddings", "logit_softcap", "zero_init")
EVAL_SEEDS = {"train": 1, "val": 2}  # offsets from cfg.seed for the fixed evaluation batches


# --- configuration -------------------------------------------------------------------------


def resolve_config(config: str | Path | None = None, overrides=None, from_run: str | Path | None = None) -> TrainConfig:
    """The TrainConfig a run uses: configs/<config>.yaml (default cpu) plus overrides; or, when a run
    folder is being continued and no config is named, that run's saved config plus overrides.

    A max_iters override below the config's warmup_iters or eval_interval shrinks those too
    (unless they are overridden as well), so a quick `--set max_iters=50` just works.
    """
    ov = parse_overrides(overrides)
    check_overrides(ov)  # a misspelt key is reported before any checkpoint is read
    if config is None and from_run is not None:
        state, _, _ = ckpt.load_checkpoint(from_run)
        saved = dict(state["config"])
        return make_config({**saved, **_fit_schedule(make_config(saved), ov)})
    name = config or "cpu"
    return load_config(name, _fit_schedule(load_config(name), ov))


def _fit_schedule(base: TrainConfig, ov: dict) -> dict:
    m = ov.get("max_iters")
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        return ov
    ov = dict(ov)
    if "warmup_iters" not in ov and base.warmup_iters > m:
        ov["warmup_iters"] = m // 10
    if "eval_interval" not in ov and base.eval_interval > m:
        ov["eval_interval"] = m
    return ov


def local_accumulation(global_steps: int, world_size: int) -> int:
    """Micro-steps per process: gradient_accumulation_steps is the global count (as in nanoGPT),
    so the global batch stays the same whatever the number of processes."""
    if global_steps % world_size:
        raise ConfigError(f"config key 'gradient_accumulation_steps' = {global_steps} must be divisible by the "
                          f"number of processes ({world_size}); set it to a multiple of {world_size}, e.g. "
                          f"--set gradient_accumulation_steps={world_size * max(1, round(global_steps / world_size))}.")
    return global_steps // world_size


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, cosine decay to min_lr, then flat."""
    decay_iters = cfg.max_iters if cfg.lr_decay_iters is None else cfg.lr_decay_iters
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    if step >= decay_iters:
        return cfg.min_lr
    ratio = (step - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


def _check_init_from(cfg: TrainConfig) -> None:
    if cfg.init_from in ("scratch", *GPT2_NAMES):
        return
    if not Path(cfg.init_from).expanduser().is_dir():
        raise ConfigError(f"config key 'init_from' = {cfg.init_from!r} is neither scratch, a GPT-2 name "
                          f"({', '.join(GPT2_NAMES)}) nor an existing folder; fix the name or the path.")


# --- processes -----------------------------------------------------------------------------


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


def _device_for(cfg: TrainConfig, dist: Dist) -> torch.device:
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


# --- data ----------------------------------------------------------------------------------


def dataset_folder(name: str, progress: bool = True) -> Path:
    """The dataset's folder; the default datasets (darkverse, darkverse-gpt2) are built when missing."""
    from atomlib.data.setup import ensure_dataset

    return ensure_dataset(name, progress=progress)


def windows(data: np.ndarray, offsets: torch.Tensor, block_size: int, device: torch.device):
    """Inputs and next-token targets (B, block_size) starting at each offset into the token array."""
    rows = [np.asarray(data[i:i + block_size + 1], dtype=np.int64) for i in offsets.tolist()]
    xy = torch.from_numpy(np.stack(rows))
    x, y = xy[:, :-1], xy[:, 1:]
    if device.type == "cuda":  # pinned memory lets the copy overlap with compute
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.contiguous().to(device), y.contiguous().to(device)


def _check_split(data, split: str, folder: Path, block_size: int) -> None:
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


# --- model ---------------------------------------------------------------------------------


def build_model(cfg: TrainConfig, meta: dict, state: dict | None):
    """(model, cfg): a fresh GPT, GPT-2 weights (init_from), or the model of the checkpoint being
    resumed. The returned cfg carries the model's real shape and switches, so state.json tells the truth."""
    from atomlib.model.gpt import GPT, GPTConfig

    if state is not None:
        saved = {**dataclasses.asdict(GPTConfig()), **state["model_config"]}  # runs from before the switches
        if cfg.init_from == "scratch":
            for k in MODEL_KEYS:
                if getattr(cfg, k) != saved[k]:
                    raise AtomError(f"the checkpoint being resumed was trained with {k}={saved[k]!r} but the config "
                                    f"says {getattr(cfg, k)!r}; resume with the run's own config or train into a new --out.")
        if saved["vocab_size"] != meta["vocab_size"]:
            raise AtomError(f"the checkpoint has vocab_size {saved['vocab_size']} but dataset '{cfg.dataset}' has "
                            f"{meta['vocab_size']}; resume on the dataset the run was trained on.")
        cfg = dataclasses.replace(cfg, **{k: saved[k] for k in MODEL_KEYS})
        return GPT(GPTConfig(**{**saved, "dropout": cfg.dropout})), cfg
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


def _peak_flops(device, dtype, state) -> float | None:
    env = os.environ.get("ATOM_PEAK_FLOPS")
    if env:
        try:
            return float(env)
        except ValueError:
            raise AtomError(f"ATOM_PEAK_FLOPS={env!r} is not a number of FLOP/s (e.g. 3.12e14).") from None
    if state is not None and state.get("peak_flops"):
        return state["peak_flops"]  # measured once per run, at its start
    return measure_peak_flops(device, dtype)


# --- run folders and metrics ---------------------------------------------------------------


def default_run_dir(name: str) -> Path:
    """outputs/runs/<config>-<YYYYmmdd-HHMMSS> (with a -2, -3 suffix if that one is taken)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, n = runs_dir() / f"{name}-{stamp}", 2
    while folder.exists():
        folder, n = runs_dir() / f"{name}-{stamp}-{n}", n + 1
    return folder


def has_checkpoint(folder) -> bool:
    folder = Path(folder)
    return (folder / "state.json").is_file() or (folder / ".prev" / "state.json").is_file()


def read_metrics(run_dir) -> list[dict]:
    """The rows of a run's metrics.jsonl (a half-written last line, left by a kill, is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and "step" in row:
                rows.append(row)
    return rows


def _trim_metrics(path: Path, step: int) -> None:
    """Keep the rows up to the checkpoint being resumed; the run will write the later ones again."""
    rows = [r for r in read_metrics(path.parent) if r["step"] <= step]
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8"))


def summary(run_dir) -> dict:
    """One row describing a run: size, speed, utilisation and losses (for tables and reports)."""
    run_dir = Path(run_dir)
    path = run_dir / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AtomError(f"{path} is missing or unreadable ({type(e).__name__}); is {run_dir} a run folder?") from None
    rows = read_metrics(run_dir)
    speed = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
    mfu = [r["mfu"] for r in rows if r.get("mfu")]
    evals = [r for r in rows if r.get("val_loss") is not None]
    return {
        "run": run_dir.name,
        "params": state.get("num_params"),
        "steps": state["step"],
        "tokens": state.get("tokens"),
        "processes": state.get("world_size", 1),
        "device": state.get("device"),
        "tokens_per_s": statistics.median(speed) if speed else None,
        "mfu": statistics.median(mfu) if mfu else None,
        "final_train_loss": evals[-1]["train_loss"] if evals else None,
        "final_val_loss": evals[-1]["val_loss"] if evals else None,
        "best_val_loss": state.get("best_val_loss"),
        "elapsed_s": state.get("elapsed_s"),
    }


# --- the training run ----------------------------------------------------------------------


def run(cfg: TrainConfig, out_dir=None, resume: bool = False, progress: bool = True) -> Path:
    """Train, checkpointing into out_dir (default outputs/runs/<config>-<date-time>); return it.

    Works as a single process or as one torchrun worker (DDP, detected from the environment).
    If out_dir already holds a checkpoint the run continues from it; resume=True insists on one.
    Every mistake a user can make raises AtomError before the run folder is created.
    """
    validate(cfg)
    _check_init_from(cfg)
    if out_dir is None and resume:
        raise AtomError("resume=True needs the run folder to continue (out_dir=...).")
    dist = Dist.from_env()
    local_gas = local_accumulation(cfg.gradient_accumulation_steps, dist.world_size)
    device = _device_for(cfg, dist)
    if dist.ddp:
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        # rank 0 decides the folder and whether to resume; every rank then reads the same checkpoint
        run_dir = Path(dist.share(str(out_dir or default_run_dir(cfg.name))))
        resume = dist.share(bool(resume or has_checkpoint(run_dir)))
        if resume and not run_dir.is_dir():
            raise AtomError(f"run folder {run_dir} does not exist; pick one under outputs/runs/ or train with `atom train`.")
        with ckpt.run_folder_lock(run_dir) if dist.master else contextlib.nullcontext():  # one writer per folder
            run_dir = _train(cfg, run_dir, resume, progress, dist, local_gas, device)
        if dist.ddp:  # leave together: without this, rank 1 tearing gloo down while rank 0 was
            torch.distributed.barrier()  # still finishing its last save died in SIGABRT now and then
        return run_dir
    finally:
        if dist.ddp:
            torch.distributed.destroy_process_group()


def _train(cfg, run_dir: Path, resume: bool, progress: bool, dist: Dist, local_gas: int, device) -> Path:
    from tqdm.auto import tqdm

    from atomlib.data.prepare import load_meta, load_tokens

    # -- everything that can fail, before anything is written --
    state = tensors = opt_tensors = None
    if resume:
        state, tensors, opt_tensors = ckpt.load_checkpoint(run_dir, need_optimizer=True)
    if dist.ddp and not dist.master:
        torch.distributed.barrier()  # rank 0 builds a missing default dataset, the others wait for it
    data_dir = dataset_folder(cfg.dataset, progress=progress and dist.master)
    if dist.ddp and dist.master:
        torch.distributed.barrier()
    meta = load_meta(data_dir)
    tok_meta = tokenizer_meta(meta)
    if state is not None and state.get("tokenizer") and state["tokenizer"] != tok_meta:
        raise AtomError(f"dataset '{cfg.dataset}' has a different vocabulary than the run in {run_dir} was "
                        "trained on; resume on the run's own dataset.")
    data = {split: load_tokens(data_dir, split) for split in ("train", "val")}
    for split, tokens in data.items():
        _check_split(tokens, split, data_dir, cfg.block_size)

    dtype = pick_dtype(device, cfg.dtype)
    native_bf16 = pick_dtype(device, "auto") == torch.bfloat16  # else Muon's Newton-Schulz runs in float32
    peak = _peak_flops(device, dtype, state) if dist.master else None  # before seeding: it draws random numbers
    torch.manual_seed(cfg.seed + dist.rank)  # ranks differ only in their dropout masks
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model, cfg = build_model(cfg, meta, state)
    model.to(device)
    optimizer = build_optimizer(model, cfg, device, float32_ns=not native_bf16)
    scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))  # fp16 needs loss scaling
    data_gen = torch.Generator().manual_seed(cfg.seed)  # the data position: same on every rank
    step, best_val, elapsed0, tokens_seen = 0, None, 0.0, 0
    if state is not None:
        _restore(state, tensors, opt_tensors, model, optimizer, scaler, data_gen, dist, cfg.seed)
        step, best_val = state["step"], state.get("best_val_loss")
        elapsed0, tokens_seen = state.get("elapsed_s", 0.0), state.get("tokens", 0)
        del tensors, opt_tensors
    # one thread or all (a CPU, one process): timed on the first steps, then fixed for the run and
    # kept in its checkpoints, so a resumed run computes with the same count (bit for bit)
    threads = ThreadChoice(device, "ATOM_TRAIN_THREADS", enabled=not dist.ddp,
                           fixed=(state or {}).get("threads"), probe=4, warmup=4, reprobe=None)
    raw = model
    if cfg.compile:
        model = torch.compile(model)
    evaluator = model  # the unwrapped (maybe compiled) model: evaluation needs no gradient sync
    if dist.ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    # -- from here on rank 0 writes --
    metrics_path = run_dir / "metrics.jsonl"
    log_file = None
    bar = None
    wb = None
    if dist.master:
        run_dir.mkdir(parents=True, exist_ok=True)
        if state is not None:
            _trim_metrics(metrics_path, step)
        log_file = open(metrics_path, "a" if state is not None else "w", encoding="utf-8")
        bar = tqdm(total=cfg.max_iters, initial=step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not progress)
        wb = _wandb(cfg, run_dir, state)

    def log(msg):
        if dist.master:
            (bar.write if progress else print)(msg)
            sys.stdout.flush()

    tokens_per_step = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.block_size  # global
    n_params = raw.get_num_params()
    what = "resuming from step %d" % step if state is not None else "training from " + cfg.init_from
    log(f"{run_dir}: {what}; {n_params / 1e6:.2f}M parameters, {describe(device, dtype)}, "
        f"{dist.world_size} process(es), {tokens_per_step:,} tokens per step, dataset {data_dir}")
    if step >= cfg.max_iters:
        log(f"already trained to step {step} (max_iters={cfg.max_iters}); raise max_iters to train on.")

    t_start = time.time()

    def elapsed():
        return elapsed0 + time.time() - t_start

    def write_row(row):
        if log_file is not None:
            log_file.write(json.dumps(row) + "\n")
            log_file.flush()  # a kill loses at most the line being written
        if wb is not None:
            wb.log(row, step=row["step"])

    def save(losses):
        """Write the metrics row first, then the checkpoint: a kill in between leaves a row that the
        resume drops and writes again, never a checkpoint whose row is missing."""
        nonlocal best_val
        rngs = dist.gather(ckpt.rng_state())
        if not dist.master:
            return
        os.fsync(log_file.fileno())
        is_best = best_val is None or losses["val"] < best_val
        best_val = losses["val"] if is_best else best_val
        st = {
            "step": step, "config": cfg.to_dict(), "model_config": dataclasses.asdict(raw.config),
            "best_val_loss": best_val, "train_loss": losses["train"], "val_loss": losses["val"],
            "tokenizer": tok_meta, "dataset": str(data_dir),
            "dataset_meta": {k: v for k, v in meta.items() if k not in ("chars", "bpe")},  # (in "tokenizer")
            "rng": rngs[0], **({"rng_ranks": rngs} if dist.ddp else {}),
            "data": {"generator": ckpt.generator_state(data_gen)},
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "elapsed_s": elapsed(), "tokens": tokens_seen, "peak_flops": peak, "num_params": n_params,
            "threads": threads.choice if threads.decided else None,
            "device": describe(device, dtype), "world_size": dist.world_size,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if wb is not None:
            st["wandb_id"] = wb.id
        if is_best:  # weights only: best/ is for sampling and evaluation, not for resuming
            ckpt.save_checkpoint(run_dir / "best", raw, st)
        ckpt.save_checkpoint(run_dir, raw, st, optimizer)
        log(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
            + (" (best, saved)" if is_best else " (saved)"))

    if state is None and step < cfg.max_iters:  # where the curves start: the untrained model
        at = elapsed()  # as in every row: the time the model reached this state, before evaluating it
        losses = estimate_loss(evaluator, data, cfg, device, dtype, dist)
        write_row({"step": 0, "lr": get_lr(0, cfg), "loss": losses["train"], "train_loss": losses["train"],
                   "val_loss": losses["val"], "tokens": 0, "tokens_per_s": None, "mfu": None, "elapsed_s": at})
        log(f"step 0: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")

    t_interval, steps_in_interval = time.perf_counter(), 0
    threads.on()
    try:
        while step < cfg.max_iters:
            t_step = time.perf_counter()
            lr = get_lr(step, cfg)
            set_lr(optimizer, cfg, lr / cfg.learning_rate)  # each group's own peak, on the same schedule
            # the global batch of this step, from the one generator; this rank keeps its micro-batches
            ix = torch.randint(len(data["train"]) - cfg.block_size,
                               (cfg.gradient_accumulation_steps, cfg.batch_size), generator=data_gen)
            ix = ix[dist.rank * local_gas:(dist.rank + 1) * local_gas]
            step_loss = torch.zeros((), device=device)
            for micro in range(local_gas):
                x, y = windows(data["train"], ix[micro], cfg.block_size, device)
                # DDP all-reduces gradients in backward; only the last micro-step needs to
                last = micro == local_gas - 1
                with (model.no_sync() if dist.ddp and not last else contextlib.nullcontext()):
                    with autocast(device, dtype):
                        _, loss = model(x, y)
                    scaler.scale(loss / local_gas).backward()
                step_loss += loss.detach()
            grad_norm = None
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            threads.record(time.perf_counter() - t_step)
            steps_in_interval += 1
            tokens_seen += tokens_per_step
            if bar is not None:
                bar.update()

            is_eval = step % cfg.eval_interval == 0 or step == cfg.max_iters
            if step % cfg.log_interval and not is_eval:
                continue
            # a logged step: the loss of the whole global batch, and the speed since the last log
            loss_val = dist.sum(step_loss / local_gas).item() / dist.world_size
            synchronize(device)
            dt = time.perf_counter() - t_interval
            tok_s = steps_in_interval * tokens_per_step / dt
            mfu = raw.estimate_mfu(tok_s / dist.world_size, peak) if peak else None
            row = {"step": step, "lr": lr, "loss": loss_val, "tokens": tokens_seen, "tokens_per_s": tok_s,
                   "mfu": mfu, "elapsed_s": elapsed()}
            if grad_norm is not None:
                row["grad_norm"] = float(grad_norm)
            if bar is not None:
                bar.set_postfix(loss=f"{loss_val:.4f}", tok_s=f"{tok_s:,.0f}", refresh=False)
            log(f"step {step}/{cfg.max_iters} | loss {loss_val:.4f} | lr {lr:.2e} | {tok_s:,.0f} tok/s"
                + (f" | mfu {100 * mfu:.1f}%" if mfu is not None else "") + f" | {elapsed():.0f}s")
            if is_eval:
                losses = estimate_loss(evaluator, data, cfg, device, dtype, dist)
                row.update(train_loss=losses["train"], val_loss=losses["val"])
                write_row(row)
                save(losses)
            else:
                write_row(row)
            t_interval, steps_in_interval = time.perf_counter(), 0
    finally:
        threads.off()  # torch's own thread count back, however the loop ends
    if dist.master:
        bar.close()
        log_file.close()
        if wb is not None:
            wb.finish()
        if best_val is not None:
            log(f"done: step {step}, best val loss {best_val:.4f}, {elapsed():.0f}s; run folder {run_dir}")
    return run_dir


def _restore(state, tensors, opt_tensors, model, optimizer, scaler, data_gen, dist: Dist, seed: int) -> None:
    """Put back everything the next step depends on: weights, AdamW moments, loss scale, the data
    generator, and this rank's RNG (its dropout masks)."""
    ckpt.restore_model(model, tensors)
    ckpt.restore_optimizer(optimizer, opt_tensors, state["optimizer"])
    ckpt.set_generator_state(data_gen, state["data"]["generator"])
    if state.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    ranks = state.get("rng_ranks") or [state["rng"]]
    if dist.rank < len(ranks):
        ckpt.set_rng_state(ranks[dist.rank])
    else:  # resumed on more processes than saved: a fresh dropout stream for the new ranks
        torch.manual_seed(seed + dist.rank + state["step"])


def _wandb(cfg: TrainConfig, run_dir: Path, state: dict | None):
    if not cfg.wandb_log:
        return None
    try:
        import wandb
    except ImportError:
        print("wandb_log is true but wandb is not installed (pip install wandb); logging to metrics.jsonl only.")
        return None
    return wandb.init(project=cfg.wandb_project, name=run_dir.name, config=cfg.to_dict(),
                      id=(state or {}).get("wandb_id"), resume="allow", dir=str(run_dir))


# --- launching: one process here, or torchrun ----------------------------------------------


def launch(config=None, overrides=None, out_dir=None, resume=None, nproc: int = 1, nnodes: int = 1,
           node_rank: int = 0, master_addr: str = "127.0.0.1", master_port: int | None = None,
           progress: bool = True) -> Path:
    """Train from a config name (the CLI's and notebooks' entry point): in this process when
    nproc == nnodes == 1, else through `python -m torch.distributed.run` whose output is streamed
    here. resume=DIR continues that run (its saved config, plus overrides); so does an out_dir
    that already holds a checkpoint. Returns the run folder."""
    if resume is not None and out_dir is not None and Path(out_dir).resolve() != Path(resume).resolve():
        raise AtomError("give either --resume DIR or --out DIR (both name the run folder), not two different folders.")
    if nproc < 1 or nnodes < 1 or not 0 <= node_rank < nnodes:
        raise AtomError(f"--nproc {nproc} / --nnodes {nnodes} / --node-rank {node_rank} is not a valid layout; "
                        "nproc and nnodes must be >= 1 and node-rank below nnodes.")
    folder = resume if resume is not None else out_dir
    cfg = resolve_config(config, overrides, from_run=folder if folder is not None and (
        resume is not None or has_checkpoint(folder)) else None)
    world = nproc * nnodes
    local_accumulation(cfg.gradient_accumulation_steps, world)
    _check_init_from(cfg)
    run_dir = Path(folder) if folder is not None else default_run_dir(cfg.name)
    if world == 1:
        return run(cfg, run_dir, resume=resume is not None, progress=progress)

    # Check here what would otherwise fail in every worker at once, and build a missing default
    # dataset once, before the workers start.
    if resume is not None or has_checkpoint(run_dir):
        ckpt.load_checkpoint(run_dir, need_optimizer=True)
    dataset_folder(cfg.dataset, progress=progress)
    if master_port is None:
        master_port = _free_port() if nnodes == 1 else 29500
    inherit = _inherit_stdout()
    worker = ["--out", str(run_dir)]
    if config is not None:
        worker += ["--config", str(config)]
    for item in _override_args(overrides):
        worker += ["--set", item]
    if resume is not None:
        worker += ["--resume", str(resume)]
    if not (progress and inherit):
        worker.append("--no-progress")  # a bar is noise in a captured stream
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--nnodes={nnodes}",
           f"--node_rank={node_rank}", f"--master_addr={master_addr}", f"--master_port={master_port}",
           "-m", "atomlib.training.train", *worker]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # CPU workers share the cores instead of each starting one thread per core
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    print(f"launching {world} processes ({nnodes} node(s) x {nproc}): {' '.join(cmd[1:6])} ...", flush=True)
    rc = _stream(cmd, env, inherit)
    if rc != 0:
        raise AtomError(f"training under torchrun failed (exit code {rc}); the workers' messages are above.")
    return run_dir


def _override_args(overrides) -> list[str]:
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]  # JSON is valid YAML
    return list(overrides)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inherit_stdout() -> bool:
    """True when this process writes to a real file descriptor (a terminal, a pipe), so the children can
    write to it directly; False in Jupyter, whose sys.stdout is an object that must be fed lines."""
    try:
        return sys.stdout is sys.__stdout__ and sys.stdout.fileno() >= 0
    except (AttributeError, OSError, ValueError):
        return False


def _stream(cmd, env, inherit: bool) -> int:
    if inherit:
        return subprocess.call(cmd, env=env)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
        return proc.wait()
    except BaseException:  # an interrupted notebook cell stops the workers too
        proc.terminate()
        proc.wait()
        raise


# --- worker entry point: python -m atomlib.training.train --------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m atomlib.training.train",
                                description="One training process; `atom train --nproc N` runs N of these under torchrun.")
    p.add_argument("--config", default=None, help="config name under configs/ or a YAML path (default cpu)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, default=None, help="run folder")
    p.add_argument("--resume", type=Path, default=None, help="continue the run in this folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar, a log line every log_interval")
    args = p.parse_args(argv)
    try:
        folder = args.resume or args.out
        cfg = resolve_config(args.config, args.set, from_run=folder if folder is not None and (
            args.resume is not None or has_checkpoint(folder)) else None)
        run(cfg, folder, resume=args.resume is not None, progress=not args.no_progress)
    except AtomError as e:
        print(f"atom train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    code = main()
    if "LOCAL_RANK" in os.environ:  # a worker under torchrun, its process group already destroyed
        # Leave without C++ static destructors: gloo's threads, torn down at interpreter exit, now
        # and then abort a worker ("terminate called without an active exception") after the run
        # is complete and saved, and torchrun would report the whole run as failed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
