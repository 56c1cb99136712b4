"""What the bench reports: the ratios of the same run against their targets, and the table.

Each ratio divides two medians of alternating rounds of one run (ATOM over its peer), so a busy
machine slows both sides alike; `ratios_best_rounds` divides the best rounds instead. The targets
are those of the "Performance" issue and depend on the kind of machine (`case`).
"""

from __future__ import annotations

from atomlib import device as D
from atomlib.evaluation.bench_models import BenchShape, hf_attention

# Targets of the "Performance" issue, per case (ratios of tokens/s, same run).
TARGETS = {
    "bf16_units": {"train_vs_hf_fp32": 2.5, "train_vs_hf_bf16": 1.5, "generate_vs_hf": 4.0, "generate_vs_nocache": 10.0},
    "no_bf16_units": {"train_vs_hf_fp32": 1.3, "generate_vs_hf": 4.0, "generate_vs_nocache": 10.0},
    "accelerator": {"generate_vs_hf": 4.0, "generate_vs_nocache": 10.0},
}


def ratio_pairs(train_rows: dict, gen_rows: dict, G: int) -> dict:
    """Each ratio's (rows, ATOM's key, its peer's key)."""
    pairs = {"train_vs_hf_fp32": (train_rows, "atom_auto", "hf_fp32"),
             "train_vs_hf_bf16": (train_rows, "atom_bf16", "hf_bf16"),
             "train_fp32_vs_hf_fp32": (train_rows, "atom_fp32", "hf_fp32"),
             "generate_1_vs_hf": (gen_rows, "atom_generate_1", "hf_generate_1"),
             f"generate_{G}_vs_hf": (gen_rows, f"atom_generate_{G}", f"hf_generate_{G}"),
             "generate_vs_nocache": (gen_rows, "atom_generate_1", "atom_nocache_1")}
    if "atom_generate_1_fp32" in gen_rows:  # informational: ATOM in float32 against HF in float32
        pairs["generate_fp32_1_vs_hf"] = (gen_rows, "atom_generate_1_fp32", "hf_generate_1")
        pairs[f"generate_fp32_{G}_vs_hf"] = (gen_rows, f"atom_generate_{G}_fp32", f"hf_generate_{G}")
    # the ceilings: HF against ATOM's kernels alone, the most generate_vs_hf these kernels allow
    pairs["generate_1_ceiling_vs_hf"] = (gen_rows, "atom_kernels_1", "hf_generate_1")
    pairs[f"generate_{G}_ceiling_vs_hf"] = (gen_rows, f"atom_kernels_{G}", f"hf_generate_{G}")
    return pairs


def ratios(train_rows: dict, gen_rows: dict, G: int, field: str = "tokens_per_s") -> dict:
    """Every ratio of `field` (the medians, or "best_tokens_per_s"); generate_vs_hf and its
    ceiling are the lower of the one-sequence and the batch ratio."""
    out = {k: rows[a][field] / rows[b][field] for k, (rows, a, b) in ratio_pairs(train_rows, gen_rows, G).items()}
    out["generate_vs_hf"] = min(out["generate_1_vs_hf"], out[f"generate_{G}_vs_hf"])
    out["generate_ceiling_vs_hf"] = min(out["generate_1_ceiling_vs_hf"], out[f"generate_{G}_ceiling_vs_hf"])
    return out


def targets(case: str, values: dict) -> dict:
    return {k: {"target": t, "value": values[k], "met": values[k] >= t} for k, t in TARGETS[case].items()}


def notes(shape: BenchShape, hf, tiny: bool) -> list[str]:
    out = [shape.vocab_note,
           f"training runs sequences of {shape.block_size} tokens; both models have a position table of "
           f"{shape.positions} so that HF can generate {shape.prompt_tokens} + {shape.new_tokens} tokens",
           "same weights: a random GPT2LMHeadModel saved with save_pretrained and loaded by GPT.from_pretrained",
           f"HF runs as a user gets it: eager PyTorch, attn_implementation={hf_attention(hf)!r}, "
           "activation gelu_new (ATOM: the same tanh GELU)",
           "generation: HF in float32 (its default); ATOM in the precision `auto` picks here (rows marked "
           "float32 run ATOM's engine in float32 too); temperature 1, no top-k (pure sampling)",
           "rows 'kernels alone' time only the engine's linear and attention calls of every step of a "
           "generation (faster of 1 thread and all threads per step): a floor, not a way to generate; "
           "HF over it is the ceiling of generate_vs_hf on these kernels",
           "ratios divide medians of alternating rounds of this run; ratios_best_rounds divide the best rounds"]
    if tiny:
        out.append("--tiny: a toy shape for checking that the benchmark works; its figures mean nothing")
    return out


def format_table(r: dict) -> str:
    cpu = r["cpu"] or {}
    s = r["shape"]
    omp = ", ".join(f"{k}={v}" for k, v in (r.get("openmp") or {}).items() if v) or "OpenMP defaults"
    lines = [f"ATOM-GPT bench: {r['device']} ({r['device_name']}), {r['threads']} threads ({omp}), torch {r['torch']}, "
             f"transformers {r['transformers']}"]
    if r["device"] == "cpu":
        speed = cpu.get("bf16_matmul_speedup")
        kind = ("matrix units (AMX class)" if r["cpu_bf16_units"] else
                "native, not matrix units" if r["cpu_bf16_fast"] else "emulated or slow")
        lines.append(f"bf16: flags {', '.join(cpu.get('bf16_flags') or []) or 'none'}, matmul probe "
                     f"{f'{speed:.1f}x float32' if speed else 'not run'} -> {kind} "
                     f"(units need >= {D.BF16_UNITS_SPEEDUP:.0f}x); dtype auto = {r['dtype_auto']} "
                     f"(generation: {r['generate_dtype_auto']})")
    lines.append(f"shape: {s['n_layer']} layers, {s['n_head']} heads, {s['n_embd']} embd, sequence {s['block_size']}, "
                 f"vocab {s['vocab_size']}, batch {s['batch_size']}")
    lines.append(f"peak matmul (measured now): float32 {r['peak_flops']['float32'] / 1e9:.0f} GFLOP/s, "
                 f"bfloat16 {r['peak_flops']['bfloat16'] / 1e9:.0f} GFLOP/s; load average "
                 f"{r['load_average']['start']} -> {r['load_average']['end']}")
    lines.append("")
    lines.append(f"{'training (fwd + bwd + AdamW)':42s} {'tokens/s':>9s} {'best':>9s} {'step ms':>8s} {'MFU':>6s}")
    for key, row in r["train"].items():
        mfu = f"{100 * row['mfu']:.0f}%" if row.get("mfu") else "-"
        lines.append(f"  {row['label']:40s} {row['tokens_per_s']:9,.0f} {row['best_tokens_per_s']:9,.0f} "
                     f"{row['step_ms']:8.0f} {mfu:>6s}")
    lines.append("")
    lines.append(f"{'generation (%d new tokens)' % s['new_tokens']:42s} {'tokens/s':>9s} {'best':>9s} {'seconds':>8s}")
    for key, row in r["generate"].items():
        lines.append(f"  {row['label']:40s} {row['tokens_per_s']:9,.0f} {row['best_tokens_per_s']:9,.0f} "
                     f"{row['seconds_per_unit']:8.2f}")
    if r.get("generate_precision_kl") is not None:
        lines.append(f"  (generation in {r['generate_dtype_auto']}: next-token KL against float32 at most "
                     f"{r['generate_precision_kl']:.1e} over 20 steps)")
    lines.append("")
    lines.append(f"ratios (ATOM / peer, medians of the same run; case: {r['case']})")
    for key, value in r["ratios"].items():
        t = None if r["tiny"] else r["targets"].get(key)
        verdict = f"target >= {t['target']}x: {'met' if t['met'] else 'NOT met'}" if t else ""
        lines.append(f"  {key:24s} {value:6.2f}x   (best rounds {r['ratios_best_rounds'][key]:5.2f}x)  {verdict}")
    if "generate_ceiling_vs_hf" in r["ratios"]:
        lines.append("  (ceiling: HF's time over that of ATOM's kernels alone, every other op free; a generation "
                     "target above it is out of reach of these kernels on this machine)")
    lines.append(f"({r['seconds']['total']:.0f} s; {r['notes'][0]})")
    if r.get("busy"):
        lines.append(f"note: other processes kept this machine busy (load average up to {r['busy']} on "
                     f"{r['cpu_count']} cores): absolute figures are low and noisy, the same-run ratios less so")
    return "\n".join(lines)

