"""Run folders and their metrics: where a training writes, and what it leaves for the notebooks.

    outputs/runs/<config>-<date-time>/
        model.safetensors, optimizer.safetensors, state.json   the latest checkpoint (model/checkpoint.py)
        best/                                                  the best validation loss, weights only
        metrics.jsonl                                          one row per logged step
        .lock                                                  held while a training writes here

metrics.jsonl is appended and flushed row by row, so a kill loses at most the line being written
(the reader skips a half-written one). A resumed run first drops the rows written after its
checkpoint, then writes them again: the curve has no gaps and no repeats. `RunLog` is rank 0's
writer of those rows, of the console lines and, when asked for, of Weights & Biases.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import sys
from datetime import datetime
from pathlib import Path

from tqdm.auto import tqdm

from atomlib.config import TrainConfig
from atomlib.errors import AtomError
from atomlib.paths import outputs_dir, write_atomic

try:
    import fcntl  # POSIX: the run-folder lock; elsewhere trainings are not locked
except ImportError:  # pragma: no cover
    fcntl = None


# --- the folder ----------------------------------------------------------------------------


def default_run_dir(name: str) -> Path:
    """outputs/runs/<config>-<YYYYmmdd-HHMMSS> (with a -2, -3 suffix if that one is taken)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, n = outputs_dir("runs") / f"{name}-{stamp}", 2
    while folder.exists():
        folder, n = outputs_dir("runs") / f"{name}-{stamp}-{n}", n + 1
    return folder


def has_checkpoint(folder) -> bool:
    folder = Path(folder)
    return (folder / "state.json").is_file() or (folder / ".prev" / "state.json").is_file()


@contextlib.contextmanager
def run_folder_lock(folder):
    """Held by the training that writes `folder`: a second training into it stops with a message
    naming the holder, instead of two processes interleaving their saves."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    f = open(folder / ".lock", "a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise AtomError(f"{folder} is being written by another training ({holder}); wait for it to finish "
                        "or train into another folder (--out).") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
        if created and [p.name for p in folder.iterdir()] == [".lock"]:  # failed before writing: leave nothing
            shutil.rmtree(folder, ignore_errors=True)


# --- metrics -------------------------------------------------------------------------------


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


def trim_metrics(run_dir, step: int) -> None:
    """Keep the rows up to the checkpoint being resumed; the run will write the later ones again."""
    rows = [r for r in read_metrics(run_dir) if r["step"] <= step]
    write_atomic(Path(run_dir) / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8"))


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


def format_summary(s: dict) -> dict:
    """A summary as a table row a person reads: units, thousands separators, rounding."""
    def rounded(v, digits=4):
        return "n/a" if v is None else round(v, digits)

    return {
        "run": s["run"],
        "parameters": f"{s['params'] / 1e6:.2f}M",
        "steps": s["steps"],
        "processes": s["processes"],
        "device": s["device"],
        "tokens/s": f"{s['tokens_per_s']:,.0f}" if s["tokens_per_s"] else "n/a",
        "MFU": f"{100 * s['mfu']:.1f}%" if s["mfu"] else "n/a",
        "best val loss": rounded(s["best_val_loss"]),
        "final train loss": rounded(s["final_train_loss"]),
        "wall-clock (s)": rounded(s["elapsed_s"], None),
    }


# --- rank 0's writer -----------------------------------------------------------------------


class RunLog:
    """Rank 0's outputs while training: metrics.jsonl, the console (through the progress bar when
    it shows) and optionally Weights & Biases. The other ranks hold a quiet one, RunLog()."""

    def __init__(self, file=None, bar=None, wandb_run=None, progress: bool = False):
        self.file, self.bar, self.wandb, self.progress = file, bar, wandb_run, progress

    @classmethod
    def open(cls, run_dir: Path, cfg: TrainConfig, step: int, resumed: dict | None, progress: bool) -> "RunLog":
        """Start writing into run_dir at `step`; `resumed` is the state.json being continued, if any."""
        run_dir.mkdir(parents=True, exist_ok=True)
        if resumed is not None:
            trim_metrics(run_dir, step)
        file = open(run_dir / "metrics.jsonl", "a" if resumed is not None else "w", encoding="utf-8")
        bar = tqdm(total=cfg.max_iters, initial=step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not progress)
        return cls(file, bar, _wandb(cfg, run_dir, resumed), progress)

    @property
    def wandb_id(self) -> str | None:
        return self.wandb.id if self.wandb is not None else None

    def say(self, msg: str) -> None:
        if self.file is None:
            return
        (self.bar.write if self.progress else print)(msg)
        sys.stdout.flush()

    def write(self, row: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(row) + "\n")
            self.file.flush()  # a kill loses at most the line being written
        if self.wandb is not None:
            self.wandb.log(row, step=row["step"])

    def advance(self) -> None:
        """One step done."""
        if self.bar is not None:
            self.bar.update()

    def show(self, **figures) -> None:
        """Figures beside the progress bar (the last logged loss and speed)."""
        if self.bar is not None:
            self.bar.set_postfix(**figures, refresh=False)

    def sync(self) -> None:
        """The rows written so far, on disk (before a checkpoint that counts on them)."""
        if self.file is not None:
            os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.wandb is not None:
            self.wandb.finish()


def _wandb(cfg: TrainConfig, run_dir: Path, resumed: dict | None):
    if not cfg.wandb_log:
        return None
    try:
        import wandb  # lazy: optional dependency, imported only when wandb_log is on
    except ImportError:
        print("wandb_log is true but wandb is not installed (pip install wandb); logging to metrics.jsonl only.")
        return None
    return wandb.init(project=cfg.wandb_project, name=run_dir.name, config=cfg.to_dict(),
                      id=(resumed or {}).get("wandb_id"), resume="allow", dir=str(run_dir))
