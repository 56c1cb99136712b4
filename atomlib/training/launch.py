"""Launching a training: resolve its config once, then train in this process or under torchrun.

    atom train --config cpu                        # one process on CPU, CUDA or MPS (device auto)
    atom train --config darklyrics --nproc 4       # 4 GPUs here: torchrun underneath, NCCL
    python -m atomlib.training.launch --config-file FILE --out DIR    # what each torchrun worker runs

The config (a name or YAML path plus overrides, or a continued run's own config plus overrides)
is resolved here, and checked with everything else a user can get wrong (the process layout,
the accumulation count, init_from, an unreadable checkpoint) before any worker starts. The
workers get it as data: the TrainConfig written as JSON to a temporary file, whose path is their
one `--config-file` argument, so each of them trains with exactly the config checked here.
Their output is streamed back line by line (into a notebook cell, too).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from atomlib.config import TrainConfig, check_overrides, load_config, make_config, parse_overrides
from atomlib.data.setup import ensure_dataset
from atomlib.errors import AtomError
from atomlib.model import checkpoint as ckpt
from atomlib.paths import free_port, write_atomic
from atomlib.training.dist import local_accumulation
from atomlib.training.runs import default_run_dir, has_checkpoint
from atomlib.training.state import check_init_from
from atomlib.training.train import run

WORKER = "atomlib.training.launch"  # the module torchrun runs in each worker (main() below)


# --- the config ----------------------------------------------------------------------------


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


def _continued(folder, resume) -> Path | None:
    """The run folder whose saved config applies: one being resumed, or an --out that holds a checkpoint."""
    return folder if folder is not None and (resume is not None or has_checkpoint(folder)) else None


def write_config_file(cfg: TrainConfig, path: Path) -> Path:
    """cfg as JSON at path: how launch hands the resolved config to its workers."""
    write_atomic(path, (json.dumps(cfg.to_dict(), indent=1) + "\n").encode("utf-8"))
    return path


def read_config_file(path) -> TrainConfig:
    """The TrainConfig of a file written by write_config_file (every key checked again)."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise AtomError(f"config file {path} is missing or not JSON ({type(e).__name__}); "
                        "start training with `atom train`, which writes it.") from None
    if not isinstance(values, dict):
        raise AtomError(f"config file {path} is not a JSON object of config keys; start training with `atom train`.")
    return make_config(values)


# --- launching: one process here, or torchrun ----------------------------------------------


@dataclass
class Layout:
    """This node's place in a training job: nproc workers on each of nnodes machines."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None  # None: a free port on one node, 29500 across nodes

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    def check(self) -> None:
        if self.nproc < 1 or self.nnodes < 1 or not 0 <= self.node_rank < self.nnodes:
            raise AtomError(f"--nproc {self.nproc} / --nnodes {self.nnodes} / --node-rank {self.node_rank} is not a "
                            "valid layout; nproc and nnodes must be >= 1 and node-rank below nnodes.")

    def torchrun_args(self) -> list[str]:
        port = self.master_port
        if port is None:
            port = free_port() if self.nnodes == 1 else 29500
        return [f"--nproc_per_node={self.nproc}", f"--nnodes={self.nnodes}", f"--node_rank={self.node_rank}",
                f"--master_addr={self.master_addr}", f"--master_port={port}"]


def launch(config=None, overrides=None, out_dir=None, resume=None, nproc: int = 1, nnodes: int = 1,
           node_rank: int = 0, master_addr: str = "127.0.0.1", master_port: int | None = None,
           progress: bool = True) -> Path:
    """Train from a config name (the CLI's and notebooks' entry point): in this process when
    nproc == nnodes == 1, else through `python -m torch.distributed.run` whose output is streamed
    here. resume=DIR continues that run (its saved config, plus overrides); so does an out_dir
    that already holds a checkpoint. Returns the run folder."""
    if resume is not None and out_dir is not None and Path(out_dir).resolve() != Path(resume).resolve():
        raise AtomError("give either --resume DIR or --out DIR (both name the run folder), not two different folders.")
    layout = Layout(nproc, nnodes, node_rank, master_addr, master_port)
    layout.check()
    folder = resume if resume is not None else out_dir
    cfg = resolve_config(config, overrides, from_run=_continued(folder, resume))
    local_accumulation(cfg.gradient_accumulation_steps, layout.world_size)
    check_init_from(cfg)
    run_dir = Path(folder) if folder is not None else default_run_dir(cfg.name)
    if layout.world_size == 1:
        return run(cfg, run_dir, resume=resume is not None, progress=progress)
    # Check here what would otherwise fail in every worker at once, and build a missing default
    # dataset once, before the workers start.
    if resume is not None or has_checkpoint(run_dir):
        ckpt.load_checkpoint(run_dir, need_optimizer=True)
    ensure_dataset(cfg.dataset, progress=progress)
    torchrun(cfg, run_dir, resume is not None, layout, progress)
    return run_dir


def torchrun(cfg: TrainConfig, run_dir: Path, resume: bool, layout: Layout, progress: bool) -> None:
    """This node's workers under `python -m torch.distributed.run`, each training cfg into run_dir;
    their output is streamed here."""
    inherit = _inherit_stdout()
    with tempfile.TemporaryDirectory(prefix="atom-train-") as tmp:
        worker = ["--config-file", str(write_config_file(cfg, Path(tmp) / "config.json")), "--out", str(run_dir)]
        if resume:
            worker += ["--resume", str(run_dir)]
        if not (progress and inherit):
            worker.append("--no-progress")  # a bar is noise in a captured stream
        cmd = [sys.executable, "-m", "torch.distributed.run", *layout.torchrun_args(), "-m", WORKER, *worker]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # CPU workers share the cores instead of each starting one thread per core
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // layout.nproc)))
        print(f"launching {layout.world_size} processes ({layout.nnodes} node(s) x {layout.nproc}): "
              f"{' '.join(cmd[1:6])} ...", flush=True)
        rc = _stream(cmd, env, inherit)
    if rc != 0:
        raise AtomError(f"training under torchrun failed (exit code {rc}); the workers' messages are above.")


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


# --- worker entry point: python -m atomlib.training.launch ----------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {WORKER}",
                                description="One training process; `atom train --nproc N` runs N of these under torchrun.")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--config-file", type=Path, default=None,
                        help="the resolved config as JSON (what `atom train` hands its workers)")
    source.add_argument("--config", default=None,
                        help="config name under configs/ or a YAML path (default cpu), resolved as `atom train` does")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key of --config")
    p.add_argument("--out", type=Path, default=None, help="run folder")
    p.add_argument("--resume", type=Path, default=None, help="continue the run in this folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar, a log line every log_interval")
    args = p.parse_args(argv)
    if args.config_file is not None and args.set:
        p.error("--set overrides --config; a --config-file is already resolved")
    try:
        folder = args.resume or args.out
        if args.config_file is not None:
            cfg = read_config_file(args.config_file)
        else:
            cfg = resolve_config(args.config, args.set, from_run=_continued(folder, args.resume))
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
