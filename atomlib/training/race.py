"""`atom race`: time to quality. Train configs on one split, one after another, and compare val
loss against wall clock; optionally beside nanoGPT's CPU recipe run from a folder you name.

    atom race cpu cpu:optimizer=adamw --dataset shakespeare-char --nanogpt ../shared/anchors/nanogpt

A contestant is CONFIG or CONFIG:key=value,key=value (any `--set` override). Each trains in a
fresh process (`python -m atomlib.training.launch`), so none inherits another's memory or threads, and
its clock starts when that process is launched: imports, data loading and every evaluation
count, as they do for a person waiting. An evaluation line ("step N: train loss X, val loss Y")
is a point of the curve, stamped when it is printed. After a run the race measures its final
checkpoint on the whole val split (bits per character, comparable across tokenizers) and the
known-word rate of samples from `atom eval`'s prompt set (same prompts, seeds and measure).

nanoGPT (karpathy/nanoGPT, MIT) is only run, never imported or copied into this project: its
model.py, train.py and configurator.py are copied from the folder given into a scratch folder,
with the race's own train.bin / val.bin linked in, and run with its README's CPU recipe. Its
final loss is its own estimate_loss over enough random windows to cover the val split twice
(`--eval_only`), since its checkpoint is not ours to load.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import torch
from matplotlib.figure import Figure

from atomlib.config import check_overrides, parse_overrides
from atomlib.data.prepare import load_meta, load_tokens
from atomlib.data.setup import ensure_dataset
from atomlib.device import cpu_model_name, cpu_report
from atomlib.errors import AtomError
from atomlib.evaluation.loss import run_dataset, val_loss
from atomlib.evaluation.samples import sample_known_words
from atomlib.model.checkpoint import load_run
from atomlib.paths import outputs_dir
from atomlib.training.launch import WORKER, resolve_config

EVAL_LINE = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")
NANOGPT_FILES = ("model.py", "train.py", "configurator.py")
NANOGPT_CONFIG = "train_shakespeare_char.py"  # in config/ of a nanoGPT checkout, or beside the three files
# nanoGPT README's CPU recipe on top of that config: 4 layers, 4 heads, 128 wide, block 64, batch 12,
# 2000 iterations, no compile
NANOGPT_RECIPE = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
                  "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
                  "--lr_decay_iters=2000", "--dropout=0.0"]
LN2 = math.log(2)


@dataclass
class Result:
    label: str
    kind: str  # "atom" or "nanogpt"
    command: list[str]
    points: list[dict] = field(default_factory=list)  # {"step", "seconds", "train_loss", "val_loss", "val_bpc"}
    seconds: float = 0.0  # wall time of the whole training process
    final_val_loss: float | None = None  # the whole val split (nanoGPT: its estimate over it, twice covered)
    final_bpc: float | None = None
    known_word_rate: float | None = None
    chars_per_token: float = 1.0
    run_dir: str | None = None


def parse_spec(spec: str) -> tuple[str, dict]:
    """'cpu:optimizer=muon,matrix_lr=0.03' -> ('cpu', {'optimizer': 'muon', 'matrix_lr': 0.03})."""
    name, _, rest = spec.partition(":")
    if not name:
        raise AtomError(f"contestant {spec!r} names no config; write CONFIG or CONFIG:key=value,key=value.")
    overrides = parse_overrides([item for item in rest.split(",") if item.strip()]) if rest else {}
    check_overrides(overrides)
    return name, overrides


def race(specs: list[str], dataset: str | None = None, nanogpt: str | Path | None = None,
         out_dir: str | Path | None = None, target_bpc: float | None = None, samples: bool = True,
         nanogpt_set: list[str] = (), max_iters: int | None = None, progress: bool = True) -> dict:
    """Train every contestant (and nanoGPT's recipe, changed by nanogpt_set "key=value" items),
    measure them, write race.json and race.png into out_dir; return the summary. max_iters sets
    every contestant's steps (where its spec does not)."""
    if not specs and nanogpt is None:
        raise AtomError("atom race needs at least one contestant (a config name) or --nanogpt DIR.")
    parsed = [(spec, *parse_spec(spec)) for spec in specs]
    if max_iters is not None:
        parsed = [(spec, name, {"max_iters": max_iters, **ov}) for spec, name, ov in parsed]
    cfgs = [resolve_config(name, {**ov, **({"dataset": dataset} if dataset else {})}) for _, name, ov in parsed]
    datasets = {c.dataset for c in cfgs} | ({dataset} if dataset else set())
    folders = {d: ensure_dataset(d, progress=progress) for d in datasets}
    nano_dir = _check_nanogpt(nanogpt) if nanogpt is not None else None
    if nano_dir is not None and dataset is None:
        raise AtomError("--nanogpt needs --dataset: the char dataset both train on.")
    out = Path(out_dir) if out_dir else outputs_dir("races", datetime.now().strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)

    results = []
    if nano_dir is not None:
        results.append(run_nanogpt(nano_dir, folders[dataset], out / "nanogpt", nanogpt_set, progress))
    for i, ((spec, name, ov), cfg) in enumerate(zip(parsed, cfgs), 1):
        sets = {**ov, **({"dataset": str(folders[dataset])} if dataset else {})}
        results.append(run_atom(spec, name, sets, out / f"{i:02d}-{_slug(spec)}", progress))
        res = results[-1]
        res.chars_per_token = float(load_meta(folders[cfg.dataset]).get("chars_per_token") or 1.0)
        for p in res.points:
            p["val_bpc"] = p["val_loss"] / LN2 / res.chars_per_token
        measure_final(res, samples=samples, progress=progress)
    if target_bpc is None and nano_dir is not None and results[0].final_bpc is not None:
        target_bpc = results[0].final_bpc  # the default goal: nanoGPT's final loss
    summary = {"command": "atom race " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["race"] else "atomlib.training.race.race",
               "dataset": dataset, "target_bpc": target_bpc, "machine": _machine(),
               "results": [asdict(r) | {"seconds_to_target": seconds_to(r, target_bpc)} for r in results]}
    (out / "race.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    figure(summary).savefig(out / "race.png", dpi=110)
    summary["folder"] = str(out)
    if progress:
        print(format_table(summary))
        print(f"race: {out / 'race.json'}, {out / 'race.png'}")
    return summary


# --- the contestants ---------------------------------------------------------------------------


def _stream(cmd: list[str], cwd: Path | None, log: Path, label: str, progress: bool) -> tuple[list[dict], float]:
    """Run cmd, keep its output in log, and return its evaluation points stamped with the
    seconds since launch, and the process's whole wall time."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    points = []
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1)
        try:
            for line in proc.stdout:
                at = time.perf_counter() - t0
                f.write(line)
                f.flush()
                m = EVAL_LINE.match(line)
                if m:
                    points.append({"step": int(m[1]), "seconds": round(at, 2), "train_loss": float(m[2]),
                                   "val_loss": float(m[3])})
                    if progress:
                        print(f"[{label}] {at:6.1f} s  step {m[1]:>5}  val loss {float(m[3]):.4f}", flush=True)
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if rc != 0:
        raise AtomError(f"contestant {label} failed (exit code {rc}); its output is in {log}.")
    return points, time.perf_counter() - t0


def run_atom(spec: str, config: str, sets: dict, run_dir: Path, progress: bool = True) -> Result:
    """One ATOM-GPT training in its own process, into run_dir."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", WORKER, "--config", config, "--out", str(run_dir), "--no-progress"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    points, seconds = _stream(cmd, None, run_dir.with_suffix(".log"), spec, progress)
    return Result(spec, "atom", cmd, points, round(seconds, 2), run_dir=str(run_dir))


def measure_final(res: Result, samples: bool = True, progress: bool = True) -> None:
    """The final checkpoint on the whole val split, and the known-word rate of its samples."""
    model, tok, state = load_run(res.run_dir, which="latest")
    lm = val_loss(model, load_tokens(run_dataset(state), "val"), progress=progress)
    res.final_val_loss = lm["loss"]
    res.final_bpc = lm["loss"] / LN2 / res.chars_per_token
    if samples:
        res.known_word_rate = sample_known_words(model, tok, progress=progress)


def _check_nanogpt(folder) -> Path:
    folder = Path(folder).expanduser()
    missing = [f for f in NANOGPT_FILES if not (folder / f).is_file()]
    if _nanogpt_config(folder) is None:
        missing.append(f"config/{NANOGPT_CONFIG}")
    if missing:
        raise AtomError(f"--nanogpt {folder} lacks {', '.join(missing)}; name a karpathy/nanoGPT checkout.")
    return folder


def _nanogpt_config(folder: Path) -> Path | None:
    return next((p for p in (folder / "config" / NANOGPT_CONFIG, folder / NANOGPT_CONFIG) if p.is_file()), None)


def run_nanogpt(src: Path, data: Path, work: Path, changes=(), progress: bool = True) -> Result:
    """nanoGPT's CPU recipe (with `changes`, "key=value" items) on this dataset, in a scratch copy of
    its files (measurement only)."""
    meta = load_meta(data)
    if meta.get("tokenizer") != "char" or meta.get("dtype") != "uint16":
        raise AtomError(f"nanoGPT reads uint16 token files of a char dataset; {data} is {meta.get('tokenizer')} "
                        f"({meta.get('dtype')}).")
    if work.exists():
        shutil.rmtree(work)
    d = work / "data" / "race"
    d.mkdir(parents=True)
    (work / "config").mkdir()
    for f in NANOGPT_FILES:
        shutil.copy(src / f, work / f)
    shutil.copy(_nanogpt_config(src), work / "config" / NANOGPT_CONFIG)
    for split in ("train", "val"):
        os.symlink((data / f"{split}.bin").resolve(), d / f"{split}.bin")
    # nanoGPT reads its vocabulary size from a pickle; this scratch file is written for it, never read here
    (d / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": meta["vocab_size"]}))
    args = [f"config/{NANOGPT_CONFIG}", *NANOGPT_RECIPE, *(f"--{c}" for c in changes), "--dataset=race",
            f"--out_dir={work / 'out'}"]
    cmd = [sys.executable, "train.py", *args]
    points, seconds = _stream(cmd, work, work.with_suffix(".log"), "nanoGPT", progress)
    label = "nanoGPT CPU recipe" + (f" ({', '.join(changes)})" if changes else "")
    res = Result(label, "nanogpt", cmd, points, round(seconds, 2), run_dir=str(work))
    # its own estimate of the best checkpoint's loss, over random windows covering the val split twice
    windows = 2 * meta["val_tokens"] // (12 * 64) + 1
    final, _ = _stream([sys.executable, "train.py", *args, "--init_from=resume", "--eval_only=True",
                        f"--eval_iters={windows}"], work, work / "final.log", "nanoGPT final", False)
    if final:
        res.final_val_loss = final[-1]["val_loss"]
        res.final_bpc = res.final_val_loss / LN2
    for p in res.points:
        p["val_bpc"] = p["val_loss"] / LN2
    return res


# --- reading the results -------------------------------------------------------------------


def race_or_skip(specs: list[str], nanogpt: str | Path | None = None, **kwargs) -> dict | None:
    """race() where the contestants are a notebook parameter that may switch it off: None when
    there is no contestant and no nanoGPT folder, instead of race()'s error."""
    if not specs and nanogpt is None:
        return None
    return race(specs, nanogpt=nanogpt, **kwargs)


def seconds_to(res, target_bpc: float | None) -> float | None:
    """Wall time of the first evaluation at or below target_bpc (None: never reached)."""
    if target_bpc is None:
        return None
    points = res.points if isinstance(res, Result) else res["points"]
    return next((p["seconds"] for p in points if p["val_bpc"] <= target_bpc), None)


def format_table(summary: dict | None) -> str:
    """The race as a Markdown table, with the machine it ran on."""
    if summary is None:
        return "No race was run: no contestant and no nanoGPT folder were given."
    target = summary.get("target_bpc")
    head = f"time to {target:.3f} bpc (s)" if target else "time to target (s)"
    lines = [f"| contestant | {head} | wall time (s) | final val bpc | final val loss | known words |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in summary["results"]:
        def f(v, fmt):
            return "–" if v is None else format(v, fmt)
        lines.append(f"| {r['label']} | {f(r['seconds_to_target'], '.0f')} | {r['seconds']:.0f} | "
                     f"{f(r['final_bpc'], '.3f')} | {f(r['final_val_loss'], '.4f')} | {f(r['known_word_rate'], '.3f')} |")
    m = summary.get("machine") or {}
    lines.append(f"\n{m.get('cpu', '?')}, {m.get('threads', '?')} threads, torch {m.get('torch', '?')}; "
                 "the val loss of each point is the trainer's own estimate, the final columns the whole val split")
    return "\n".join(lines)


def figure(summary: dict | None) -> Figure | None:
    """Val bits per character against wall clock, one line per contestant (the target dashed),
    as a figure of its own (no pyplot: no backend to choose); None when no race was run."""
    if summary is None:
        return None
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for r in summary["results"]:
        xs = [p["seconds"] for p in r["points"]]
        ys = [p["val_bpc"] for p in r["points"]]
        ax.plot(xs, ys, "o-", ms=3, label=r["label"])
    if summary.get("target_bpc"):
        ax.axhline(summary["target_bpc"], ls="--", lw=1, color="grey")
    ax.set_xlabel("wall clock since the process started (s)")
    ax.set_ylabel("val bits per character")
    ax.set_ylim(top=min(5.0, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _machine() -> dict:
    rep = cpu_report()
    return {"cpu": cpu_model_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "bf16_units": rep["bf16_units"], "bf16_fast": rep["bf16_fast"],
            "openmp": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}}


def _slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", spec)[:60]
