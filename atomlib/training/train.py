"""The training loop: a TrainConfig in, a run folder out, in this process (alone or as one
torchrun worker; launch.py starts either).

The loop is nanoGPT's: random windows from the memory-mapped token array, gradient
accumulation, AdamW (or Muon), linear warmup then cosine decay, gradient clipping, mixed
precision. It runs over a `TrainState` (state.py) with three small steps:

    train_step   one optimizer step on this rank's slice of the global batch
    evaluate     the loss of each split on fixed batches
    save         the metrics row's file synced, then the checkpoint (and best/ when it improved)

Two things are added to nanoGPT's loop.

Exact resumption. A checkpoint holds the weights, the optimizer moments, every rank's RNG (for
dropout) and the state of the generator that draws the data windows, so a run killed at any
instant and resumed logs the same losses as one that never stopped. Rows of metrics.jsonl
written after the checkpoint are dropped on resume (runs.py): the curve has no gaps and no repeats.

Batches that do not depend on the number of processes. Each optimizer step draws its whole
global batch from one seeded generator, and each rank keeps its own slice of it (batches.py).
So --nproc changes the speed, not the run.

Only rank 0 touches the file system (run folder, checkpoints, metrics, console log).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from atomlib.config import TrainConfig, validate
from atomlib.data.prepare import load_meta, load_tokens
from atomlib.data.setup import ensure_dataset
from atomlib.data.tokenizer import tokenizer_meta
from atomlib.device import ThreadChoice, autocast, describe, pick_dtype, synchronize
from atomlib.errors import AtomError
from atomlib.model import checkpoint as ckpt
from atomlib.training.batches import check_split, estimate_loss, rank_offsets, windows
from atomlib.training.dist import Dist, device_for, local_accumulation
from atomlib.training.optim import get_lr, set_lr
from atomlib.training.runs import RunLog, default_run_dir, has_checkpoint, run_folder_lock
from atomlib.training.state import (TrainSetup, TrainState, build_model, check_init_from, checkpoint_state,
                                    new_state, peak_flops, restore)


def run(cfg: TrainConfig, out_dir=None, resume: bool = False, progress: bool = True) -> Path:
    """Train, checkpointing into out_dir (default outputs/runs/<config>-<date-time>); return it.

    Works as a single process or as one torchrun worker (DDP, detected from the environment).
    If out_dir already holds a checkpoint the run continues from it; resume=True insists on one.
    Every mistake a user can make raises AtomError before the run folder is created.
    """
    validate(cfg)
    check_init_from(cfg)
    if out_dir is None and resume:
        raise AtomError("resume=True needs the run folder to continue (out_dir=...).")
    dist = Dist.from_env()
    local_gas = local_accumulation(cfg.gradient_accumulation_steps, dist.world_size)
    device = device_for(cfg, dist)
    if dist.ddp:
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        # rank 0 decides the folder and whether to resume; every rank then reads the same checkpoint
        run_dir = Path(dist.share(str(out_dir or default_run_dir(cfg.name))))
        resume = dist.share(bool(resume or has_checkpoint(run_dir)))
        if resume and not run_dir.is_dir():
            raise AtomError(f"run folder {run_dir} does not exist; pick one under outputs/runs/ or train with `atom train`.")
        with run_folder_lock(run_dir) if dist.master else contextlib.nullcontext():  # one writer per folder
            setup, state, saved = prepare(cfg, run_dir, resume, progress, dist, device, local_gas)
            loop(setup, state, saved, progress)
        # leave together: without this, rank 1 tearing gloo down while rank 0 was still finishing
        # its last save died in SIGABRT now and then
        dist.barrier()
        return run_dir
    finally:
        if dist.ddp:
            torch.distributed.destroy_process_group()


# --- before the first step: everything that can fail, nothing written -----------------------


def prepare(cfg: TrainConfig, run_dir: Path, resume: bool, progress: bool, dist: Dist, device: torch.device,
            local_gas: int) -> tuple[TrainSetup, TrainState, dict | None]:
    """(setup, state, the resumed checkpoint's state.json or None): the data, the model and its
    optimizer (restored when resuming), wrapped for torch.compile and DDP."""
    saved = tensors = opt_tensors = None
    if resume:
        saved, tensors, opt_tensors = ckpt.load_checkpoint(run_dir, need_optimizer=True)
    data_dir, meta, data = _load_data(cfg, run_dir, saved, progress, dist)
    dtype = pick_dtype(device, cfg.dtype)
    native_bf16 = pick_dtype(device, "auto") == torch.bfloat16  # else Muon's Newton-Schulz runs in float32
    peak = peak_flops(device, dtype, saved) if dist.master else None  # before seeding: it draws random numbers
    torch.manual_seed(cfg.seed + dist.rank)  # ranks differ only in their dropout masks
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model, cfg = build_model(cfg, meta, saved)
    model.to(device)
    state = new_state(model, cfg, device, dtype, float32_ns=not native_bf16)
    if saved is not None:
        restore(state, saved, tensors, opt_tensors, dist.rank, cfg.seed)
    # one thread or all (a CPU, one process): timed on the first steps, then fixed for the run and
    # kept in its checkpoints, so a resumed run computes with the same count (bit for bit)
    threads = ThreadChoice(device, "ATOM_TRAIN_THREADS", enabled=not dist.ddp,
                           fixed=(saved or {}).get("threads"), probe=4, warmup=4, reprobe=None)
    if cfg.compile:
        state.train_model = state.eval_model = torch.compile(model)
    if dist.ddp:
        state.train_model = DDP(state.eval_model, device_ids=[device.index] if device.type == "cuda" else None)
    setup = TrainSetup(cfg, run_dir, dist, device, dtype, local_gas, data, data_dir, meta, tokenizer_meta(meta),
                       peak, threads)
    return setup, state, saved


def _load_data(cfg: TrainConfig, run_dir: Path, saved: dict | None, progress: bool, dist: Dist):
    """(folder, meta.json, {split: tokens}) of the run's dataset, built first if it is a missing default one."""
    if not dist.master:
        dist.barrier()  # rank 0 builds a missing default dataset, the others wait for it
    data_dir = ensure_dataset(cfg.dataset, progress=progress and dist.master)
    if dist.master:
        dist.barrier()
    meta = load_meta(data_dir)
    if saved is not None and saved.get("tokenizer") and saved["tokenizer"] != tokenizer_meta(meta):
        raise AtomError(f"dataset '{cfg.dataset}' has a different vocabulary than the run in {run_dir} was "
                        "trained on; resume on the run's own dataset.")
    data = {split: load_tokens(data_dir, split) for split in ("train", "val")}
    for split, tokens in data.items():
        check_split(tokens, split, data_dir, cfg.block_size)
    return data_dir, meta, data


# --- the loop ------------------------------------------------------------------------------


def loop(setup: TrainSetup, state: TrainState, saved: dict | None, progress: bool) -> None:
    """Train from state.step to max_iters; `saved` is the state.json being resumed, if any."""
    cfg = setup.cfg
    log = RunLog.open(setup.run_dir, cfg, state.step, saved, progress) if setup.dist.master else RunLog()
    what = "resuming from step %d" % state.step if saved is not None else "training from " + cfg.init_from
    log.say(f"{setup.run_dir}: {what}; {state.model.get_num_params() / 1e6:.2f}M parameters, "
            f"{describe(setup.device, setup.dtype)}, {setup.dist.world_size} process(es), "
            f"{setup.tokens_per_step:,} tokens per step, dataset {setup.data_dir}")
    if state.step >= cfg.max_iters:
        log.say(f"already trained to step {state.step} (max_iters={cfg.max_iters}); raise max_iters to train on.")
    state.started = time.time()
    if saved is None and state.step < cfg.max_iters:  # where the curves start: the untrained model
        at = state.elapsed()  # as in every row: the time the model reached this state, before evaluating it
        losses = evaluate(state, setup)
        log.write({"step": 0, "lr": get_lr(0, cfg), "loss": losses["train"], "train_loss": losses["train"],
                   "val_loss": losses["val"], "tokens": 0, "tokens_per_s": None, "mfu": None, "elapsed_s": at})
        log.say(f"step 0: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
    setup.threads.on()
    try:
        _steps(setup, state, log)
    finally:
        setup.threads.off()  # torch's own thread count back, however the loop ends
    log.close()
    if state.best_val is not None:
        log.say(f"done: step {state.step}, best val loss {state.best_val:.4f}, {state.elapsed():.0f}s; "
                f"run folder {setup.run_dir}")


def _steps(setup: TrainSetup, state: TrainState, log: RunLog) -> None:
    """Optimizer steps up to max_iters: a metrics row every log_interval, an evaluation and a
    checkpoint every eval_interval and at the end."""
    cfg = setup.cfg
    since, steps = time.perf_counter(), 0  # the speed is measured between logged steps
    while state.step < cfg.max_iters:
        t_step = time.perf_counter()
        lr, loss, grad_norm = train_step(state, setup)
        setup.threads.record(time.perf_counter() - t_step)
        steps += 1
        log.advance()
        logged, evaluated = due(state.step, cfg)
        if not logged:
            continue
        row = step_row(state, setup, lr, loss, grad_norm, since, steps)
        log.show(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:,.0f}")
        mfu = f" | mfu {100 * row['mfu']:.1f}%" if row["mfu"] is not None else ""
        log.say(f"step {state.step}/{cfg.max_iters} | loss {row['loss']:.4f} | lr {lr:.2e} | "
                f"{row['tokens_per_s']:,.0f} tok/s{mfu} | {state.elapsed():.0f}s")
        if evaluated:
            losses = evaluate(state, setup)
            row.update(train_loss=losses["train"], val_loss=losses["val"])
            log.write(row)
            save(state, setup, log, losses)
        else:
            log.write(row)
        since, steps = time.perf_counter(), 0


def due(step: int, cfg: TrainConfig) -> tuple[bool, bool]:
    """(logged, evaluated) after optimizer step `step`: every log_interval and eval_interval, and the last."""
    evaluated = step % cfg.eval_interval == 0 or step == cfg.max_iters
    return evaluated or step % cfg.log_interval == 0, evaluated


def train_step(state: TrainState, setup: TrainSetup):
    """One optimizer step on this rank's slice of the global batch: (lr, the mean loss of this
    rank's micro-batches as a device tensor, the gradient norm before clipping or None)."""
    cfg, dist, gas = setup.cfg, setup.dist, setup.local_gas
    lr = get_lr(state.step, cfg)
    set_lr(state.optimizer, cfg, lr / cfg.learning_rate)  # each group's own peak, on the same schedule
    ix = rank_offsets(state.data_gen, len(setup.data["train"]), cfg, dist)
    step_loss = torch.zeros((), device=setup.device)
    for micro in range(gas):
        x, y = windows(setup.data["train"], ix[micro], cfg.block_size, setup.device)
        # DDP all-reduces gradients in backward; only the last micro-step needs to
        last = micro == gas - 1
        with (state.train_model.no_sync() if dist.ddp and not last else contextlib.nullcontext()):
            with autocast(setup.device, setup.dtype):
                _, loss = state.train_model(x, y)
            state.scaler.scale(loss / gas).backward()
        step_loss += loss.detach()
    grad_norm = None
    if cfg.grad_clip > 0:
        state.scaler.unscale_(state.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.tokens += setup.tokens_per_step
    return lr, step_loss / gas, grad_norm


def step_row(state: TrainState, setup: TrainSetup, lr: float, loss: torch.Tensor, grad_norm, since: float,
             steps: int) -> dict:
    """The metrics row of a logged step: the loss of the whole global batch (all ranks), and the
    speed over the `steps` steps since perf_counter() was `since`."""
    dist = setup.dist
    loss_val = dist.sum(loss).item() / dist.world_size
    synchronize(setup.device)
    tok_s = steps * setup.tokens_per_step / (time.perf_counter() - since)
    mfu = state.model.estimate_mfu(tok_s / dist.world_size, setup.peak_flops) if setup.peak_flops else None
    row = {"step": state.step, "lr": lr, "loss": loss_val, "tokens": state.tokens, "tokens_per_s": tok_s,
           "mfu": mfu, "elapsed_s": state.elapsed()}
    if grad_norm is not None:
        row["grad_norm"] = float(grad_norm)
    return row


def evaluate(state: TrainState, setup: TrainSetup) -> dict:
    """{"train": loss, "val": loss} on the fixed evaluation batches."""
    return estimate_loss(state.eval_model, setup.data, setup.cfg, setup.device, setup.dtype, setup.dist)


def save(state: TrainState, setup: TrainSetup, log: RunLog, losses: dict) -> None:
    """Checkpoint after the evaluation whose row was just written: that row is synced to disk
    first, so a kill in between leaves a row that the resume drops and writes again, never a
    checkpoint whose row is missing. best/ (weights only) follows the best val loss."""
    rngs = setup.dist.gather(ckpt.rng_state())
    is_best = state.best_val is None or losses["val"] < state.best_val
    if is_best:
        state.best_val = losses["val"]
    if not setup.dist.master:
        return
    log.sync()
    st = checkpoint_state(state, setup, losses, rngs, log.wandb_id)
    if is_best:  # weights only: best/ is for sampling and evaluation, not for resuming
        ckpt.save_checkpoint(setup.run_dir / "best", state.model, st)
    ckpt.save_checkpoint(setup.run_dir, state.model, st, state.optimizer)
    log.say(f"step {state.step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
            + (" (best, saved)" if is_best else " (saved)"))
