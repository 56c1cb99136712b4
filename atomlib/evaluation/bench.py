"""`atom bench`: ATOM-GPT against Hugging Face GPT-2, same shape, same weights, same run.

The machines this runs on are shared and noisy, so no figure is compared across runs. Both
models are built with one shape and one set of weights and their logits checked to agree
(bench_models.py); every contestant is warmed up, then all of them are timed in alternating
rounds (bench_timing.py), and each ratio divides two medians of the same run (bench_report.py).

Training: tokens/s of a full step (forward, backward, AdamW step) and MFU against the
matrix-multiply peak of the dtype used, measured in the same run. Generation: tokens/s for one
sequence of new tokens after a short prompt and for a batch (completion mode's best-of-N), ATOM
through GPT.generate, HF through its own generate, and ATOM without a KV cache
(bench_rows.py). Both run under the process's OpenMP settings (recorded).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from atomlib import device as D
from atomlib.evaluation.bench_rows import dtype_name, generation_contestants, train_contestants
from atomlib.evaluation.bench_models import BenchShape, bench_shape, build_models, next_token_kl, same_weights_check
from atomlib.evaluation.bench_report import format_table, notes, ratios, targets
from atomlib.evaluation.bench_timing import Contestant, best_peaks, measured_peaks, say, silent, summary, time_rounds
from atomlib.generation.engine import matmul_dtype


@dataclass
class Machine:
    """What the bench runs on, and what that decides: the dtype auto picks and the targets' case."""

    dev: torch.device
    auto_dtype: torch.dtype
    units: bool | None  # bf16 matrix units (CPUs only)
    fast: bool | None  # bf16 faster than float32 (CPUs only)
    case: str  # "bf16_units", "no_bf16_units" or "accelerator"

    @property
    def emulated(self) -> bool:
        return self.dev.type == "cpu" and not self.fast


def machine(device: str = "auto") -> Machine:
    dev = D.pick_device(device)
    auto_dtype = D.pick_dtype(dev, "auto")
    if dev.type != "cpu":
        return Machine(dev, auto_dtype, None, None, "accelerator")
    units, fast = D.cpu_has_bf16_units(), D.cpu_bf16_is_fast()
    return Machine(dev, auto_dtype, units, fast, "bf16_units" if units else "no_bf16_units")


@dataclass
class Plan:
    """How long each phase may run: rounds per comparison, time budgets (None: every round), steps per unit."""

    train_rounds: int
    gen_rounds: int
    budgets: tuple[float | None, float | None]
    steps: int

    @classmethod
    def of(cls, tiny: bool, rounds: int | None) -> "Plan":
        train_rounds, gen_rounds = (rounds, rounds) if rounds else ((2, 2) if tiny else (5, 3))
        # a default run stops adding rounds once a phase's budget is spent, so it stays short on a busy machine
        budgets = (None, None) if (rounds or tiny) else (50.0, 75.0)
        return cls(train_rounds, gen_rounds, budgets, 1 if tiny else 2)


@dataclass
class Measured:
    train: list[Contestant]
    gen: list[Contestant]
    peaks: dict
    gen_dtype: torch.dtype  # what generation's precision auto picks for this model
    precision_kl: float | None
    seconds: dict


def measure(atom, hf, shape: BenchShape, m: Machine, plan: Plan, compile_row: bool,
            report: Callable[[str], None] = say) -> Measured:
    """Time training, then generation; the matmul peaks around them (the best of three measurements)."""
    peaks = measured_peaks(m.dev, m.emulated)
    train = train_contestants(atom, hf, shape, m.dev, m.auto_dtype, m.emulated, plan.train_rounds, plan.steps,
                              compile_row)
    train_s = time_rounds(train, m.dev, plan.budgets[0], "training", report)
    peaks = best_peaks(peaks, m.dev, m.emulated)
    gen_dtype = matmul_dtype("auto", m.dev, atom)
    precision_kl = next_token_kl(atom, shape, m.dev, gen_dtype)
    gen = generation_contestants(atom, hf, shape, m.dev, plan.gen_rounds, gen_dtype)
    gen_s = time_rounds(gen, m.dev, plan.budgets[1], "generation", report)
    peaks = best_peaks(peaks, m.dev, m.emulated)
    return Measured(train, gen, peaks, gen_dtype, precision_kl, {"train": train_s, "generate": gen_s})


def train_rows(train: list[Contestant], peaks: dict, flops_per_token: float, steps: int, auto_dtype,
               compile_row: bool) -> dict:
    """Each training contestant's summary with its MFU and step time, plus "atom_auto": the row of
    the dtype auto picks (or the compiled one, when asked for and faster)."""
    rows = {}
    for c in train:
        row = summary(c)
        peak = peaks.get(row["dtype"])
        row["mfu"] = flops_per_token * row["tokens_per_s"] / peak if peak else None
        row["step_ms"] = 1000 * row["seconds_per_unit"] / steps
        rows[c.key] = row
    auto_key = {"float32": "atom_fp32", "bfloat16": "atom_bf16"}.get(dtype_name(auto_dtype), "atom_auto")
    if compile_row:
        auto_key = max((auto_key, "atom_auto_compiled"), key=lambda k: rows[k]["tokens_per_s"])
    rows["atom_auto"] = {**rows[auto_key], "label": f"ATOM auto (= {rows[auto_key]['label']})", "same_as": auto_key}
    return rows


def run_bench(config: str = "test", tiny: bool = False, rounds: int | None = None, device: str = "auto",
              compile_row: bool = False, json_path: Path | None = None, quiet: bool = False) -> dict:
    """Run everything, print the table (unless quiet), write the JSON (if asked); return the result."""
    report = silent if quiet else say
    t0 = time.perf_counter()
    load_start = _loadavg()
    m, shape, plan = machine(device), bench_shape(config, tiny), Plan.of(tiny, rounds)
    report(f"bench: building the models ({shape.n_layer} layers, {shape.n_head} heads, {shape.n_embd} embd, "
           f"vocab {shape.vocab_size}) on {m.dev.type}")
    atom, hf = build_models(shape)
    atom.to(m.dev)
    hf.to(m.dev)
    check = same_weights_check(atom, hf, shape, m.dev)
    if not check["ok"]:
        raise RuntimeError(f"ATOM and HF disagree on the same weights (max |logit diff| {check['max_abs_logit_diff']:.2e})")
    measured = measure(atom, hf, shape, m, plan, compile_row, report)
    result = bench_result(m, shape, plan, tiny, check, measured, atom.flops_per_token(shape.block_size),
                          compile_row, hf, load_start)
    result["seconds"]["total"] = time.perf_counter() - t0
    if not quiet:
        print(format_table(result))
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        report(f"bench: wrote {json_path}")
    return result


def bench_result(m: Machine, shape: BenchShape, plan: Plan, tiny: bool, check: dict, measured: Measured,
                 fpt: float, compile_row: bool, hf, load_start) -> dict:
    """Every figure of one run, as `atom bench --json` writes it."""
    train = train_rows(measured.train, measured.peaks, fpt, plan.steps, m.auto_dtype, compile_row)
    gen = {c.key: summary(c) for c in measured.gen}
    medians = ratios(train, gen, shape.gen_batch)
    load_end = _loadavg()
    worst = max((x[0] for x in (load_start, load_end) if x), default=0.0)
    auto_name = dtype_name(m.auto_dtype)
    return {
        "command": "atom bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "atomlib.evaluation.bench.run_bench",
        "device": m.dev.type,
        "device_name": D.cpu_model_name() if m.dev.type == "cpu" else _accelerator_name(m.dev),
        "dtype": auto_name,
        "dtype_auto": auto_name,
        "generate_dtype_auto": dtype_name(measured.gen_dtype),
        "generate_precision_kl": measured.precision_kl,
        "cpu_bf16_units": m.units,
        "cpu_bf16_fast": m.fast,
        "case": m.case,
        "tiny": tiny,
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "openmp": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")},
        "cpu_count": os.cpu_count(),
        "cpu": {**D.cpu_report(), "flags": sorted(D.cpu_flags())} if m.dev.type == "cpu" else None,
        "load_average": {"start": load_start, "end": load_end},
        # busier than our own threads make it, by a margin
        "busy": worst if worst > 1.5 * (os.cpu_count() or 1) else None,
        "shape": {k: v for k, v in asdict(shape).items() if k != "chars"} | {"positions": shape.positions},
        "same_weights": check,
        "peak_flops": measured.peaks,
        "flops_per_token": fpt,
        "train": train,
        "generate": gen,
        "ratios": medians,
        "ratios_best_rounds": ratios(train, gen, shape.gen_batch, "best_tokens_per_s"),
        "targets": targets(m.case, medians),
        "notes": notes(shape, hf, tiny),
        "seconds": dict(measured.seconds),
    }


def profile_tables(config: str = "test", tiny: bool = False, device: str = "auto", rows: int = 8) -> str:
    """torch.profiler's top ops (by self CPU time) for one unit of work of the main contestants:
    a training step of ATOM in its auto dtype and of HF in float32, and generation at batch 1 and
    at the generation batch for both. The profile behind the README's explanations."""
    m, shape = machine(device), bench_shape(config, tiny)
    atom, hf = build_models(shape)
    train = {c.key: c for c in train_contestants(atom, hf, shape, m.dev, m.auto_dtype, m.emulated, 1, 1, False)}
    auto_key = {torch.float32: "atom_fp32", torch.bfloat16: "atom_bf16"}.get(m.auto_dtype, "atom_auto")
    gen = {c.key: c for c in generation_contestants(atom, hf, shape, m.dev, 1, matmul_dtype("auto", m.dev, atom))}
    G = shape.gen_batch
    chosen = [train[auto_key], train["hf_fp32"], gen["atom_generate_1"], gen["hf_generate_1"],
              gen[f"atom_generate_{G}"], gen[f"hf_generate_{G}"]]
    out = []
    for c in chosen:
        (c.warm or c.run)()
        D.synchronize(m.dev)
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            c.run()
            D.synchronize(m.dev)
        seconds = time.perf_counter() - t0
        out.append(f"== {c.label}: {c.tokens} tokens in {seconds:.2f} s under the profiler "
                   f"({c.settings.get('dtype') or c.settings.get('precision')})")
        out.append(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48))
    return "\n".join(out)


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _accelerator_name(dev) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return dev.type
