"""`atom bench`: ATOM-GPT against Hugging Face GPT-2, same shape, same weights, same run.

The machines this runs on are shared and noisy, so no figure is compared across runs. Both
models are built here with one shape and one set of weights (a random GPT2LMHeadModel is
saved to a temporary folder and ATOM-GPT loads it with GPT.from_pretrained; their logits
are checked to agree), every contestant is warmed up, then all of them are timed in
alternating rounds, and each ratio divides two medians of the same run.

Training: tokens/s of a full step (forward, backward, AdamW step) and MFU against the
matrix-multiply peak of the dtype used, measured in the same run. Rows: ATOM and HF in
float32 (HF as a user gets it: eager PyTorch, its default attention) and under the same
bf16 autocast, and ATOM with the settings `dtype: auto` picks on this machine.
Generation: tokens/s for one sequence of 500 new tokens after a 16-token prompt and for a
batch of 8 (completion mode's best-of-N), ATOM through GPT.generate (the decode loop that
sampling, chat and evaluation share), HF through GPT2LMHeadModel.generate (pure sampling,
its KV cache on), and ATOM without a KV cache (nanoGPT's way: the whole cropped context
re-encoded for every token). Both run under the process's OpenMP settings (recorded).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from atomlib import device as D
from atomlib.errors import AtomError

DEFAULT_VOCAB = 96  # printable ASCII and a newline: about what a char corpus of English verse has
PROMPT = "By the river of blood and the moon"

# Targets of the "Performance" issue, per case (ratios of tokens/s, same run).
TARGETS = {
    "bf16_units": {"train_vs_hf_fp32": 2.5, "train_vs_hf_bf16": 1.5, "generate_vs_hf": 4.0, "generate_vs_nocache": 10.0},
    "no_bf16_units": {"train_vs_hf_fp32": 1.3, "generate_vs_hf": 4.0, "generate_vs_nocache": 10.0},
    "accelerator": {"generate_vs_hf": 4.0, "generate_vs_nocache": 10.0},
}


@dataclass
class BenchShape:
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int  # training sequence length
    vocab_size: int
    batch_size: int = 8
    prompt_tokens: int = 16
    new_tokens: int = 500
    gen_batch: int = 8
    chars: list = field(default_factory=list, repr=False)
    vocab_note: str = ""

    @property
    def positions(self) -> int:
        """The position table: HF cannot run past it, so it covers prompt + every new token."""
        return max(self.block_size, self.prompt_tokens + self.new_tokens)


def bench_shape(config: str = "test", tiny: bool = False) -> BenchShape:
    """The model shape of a training config, with the vocabulary of its char dataset."""
    from atomlib.config import load_config

    cfg = load_config(config)
    chars, note = _vocabulary(cfg.dataset)
    if tiny:
        return BenchShape(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=len(chars), batch_size=2,
                          prompt_tokens=8, new_tokens=24, gen_batch=2, chars=chars, vocab_note=note)
    return BenchShape(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size,
                      vocab_size=len(chars), chars=chars, vocab_note=note)


def _vocabulary(dataset: str) -> tuple[list[str], str]:
    from atomlib.data.prepare import load_meta, resolve_dataset

    try:
        meta = load_meta(resolve_dataset(dataset))
    except AtomError:
        meta = {}
    if meta.get("tokenizer") == "char" and meta.get("chars"):
        return list(meta["chars"]), f"vocabulary of dataset '{dataset}' ({len(meta['chars'])} characters)"
    chars = ["\n"] + [chr(i) for i in range(32, 127)]
    return chars, (f"dataset '{dataset}' has no char meta.json here, so the vocabulary is {DEFAULT_VOCAB} "
                   "characters (printable ASCII and a newline)")


# --- the two models ------------------------------------------------------------------------


def build_models(shape: BenchShape, seed: int = 1337):
    """(ATOM GPT, HF GPT2LMHeadModel) with the same shape and the same weights, float32, dropout 0."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from atomlib.model.gpt import GPT

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights" bars of a temporary folder are noise here
    torch.manual_seed(seed)
    hc = GPT2Config(vocab_size=shape.vocab_size, n_positions=shape.positions, n_embd=shape.n_embd,
                    n_layer=shape.n_layer, n_head=shape.n_head, activation_function="gelu_new",
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    hf = GPT2LMHeadModel(hc)
    with tempfile.TemporaryDirectory(prefix="atom-bench-") as tmp:
        hf.save_pretrained(tmp)
        atom = GPT.from_pretrained(tmp)
    return atom, hf


@torch.no_grad()
def same_weights_check(atom, hf, shape: BenchShape, device) -> dict:
    """Largest |logit difference| of the two models on one random batch (float32, eval mode)."""
    atom.eval(), hf.eval()
    idx = torch.randint(0, shape.vocab_size, (2, min(shape.block_size, 64)), device=device)
    ours = atom(idx, all_logits=True)[0]
    theirs = hf(idx).logits
    diff = (ours - theirs).abs().max().item()
    return {"max_abs_logit_diff": diff, "ok": diff < 1e-3}


# --- timing --------------------------------------------------------------------------------


@dataclass
class Contestant:
    key: str
    label: str
    run: object  # callable doing one unit of work; may return the seconds to count (else: its wall time)
    tokens: int  # tokens one unit processes or produces
    rounds: int  # at most this many timed rounds
    warmup: int = 1
    warm: object = None  # a cheaper callable for the warm-up (default: run)
    settings: dict = field(default_factory=dict)
    seconds: list = field(default_factory=list)

    def rates(self) -> list[float]:
        return [self.tokens / s for s in self.seconds]


def time_rounds(contestants: list[Contestant], device, budget_s: float | None, progress: str) -> float:
    """Warm every contestant up, then time them in alternating rounds (each round in a rotated
    order, so no one always runs right after the same neighbour). Stops adding rounds once the
    budget is spent: after two rounds, or after one if it took twice the budget (a machine that
    busy gives noise anyway). Returns the wall time taken."""
    t_start = time.perf_counter()
    for c in contestants:
        for _ in range(c.warmup):
            (c.warm or c.run)()
        D.synchronize(device)
    rounds = max(c.rounds for c in contestants)
    for r in range(rounds):
        order = contestants[r % len(contestants):] + contestants[:r % len(contestants)]
        for c in order:
            if len(c.seconds) >= c.rounds:
                continue
            D.synchronize(device)
            t0 = time.perf_counter()
            took = c.run()
            D.synchronize(device)
            c.seconds.append(took if isinstance(took, float) else time.perf_counter() - t0)
        _say(f"{progress}: round {r + 1}/{rounds} done ({time.perf_counter() - t_start:.0f} s)")
        spent = time.perf_counter() - t_start
        if budget_s is not None and (spent > budget_s and r >= 1 or spent > 2 * budget_s):
            break
    return time.perf_counter() - t_start


def summary(c: Contestant) -> dict:
    rates = c.rates()
    return {"label": c.label, "tokens_per_s": statistics.median(rates), "best_tokens_per_s": max(rates),
            "rounds": len(rates), "tokens_per_s_rounds": [round(x, 1) for x in rates],
            "seconds_per_unit": statistics.median(c.seconds), "tokens_per_unit": c.tokens, **c.settings}


# --- training ------------------------------------------------------------------------------


def train_contestants(atom, hf, shape: BenchShape, device, auto_dtype, emulated_bf16: bool,
                      rounds: int, steps: int, compile_row: bool) -> list[Contestant]:
    B, T = shape.batch_size, shape.block_size
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, shape.vocab_size, (B, T), generator=g).to(device)
    y = torch.randint(0, shape.vocab_size, (B, T), generator=g).to(device)

    def atom_step(model, opt, dtype):
        def run():
            for _ in range(steps):
                with D.autocast(device, dtype):
                    _, loss = model(x, y)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        return run

    def hf_step(model, opt, dtype):
        def run():
            for _ in range(steps):
                with D.autocast(device, dtype):
                    loss = model(input_ids=x, labels=y).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        return run

    def atom_copy():
        m = copy.deepcopy(atom).to(device).train()
        return m, m.configure_optimizers(0.1, 1e-4, (0.9, 0.95), device.type)

    def hf_copy():
        m = copy.deepcopy(hf).to(device).train()
        # what transformers' Trainer uses by default with torch >= 2.8: fused AdamW
        fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
        return m, torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, **fused)

    f32, b16 = torch.float32, torch.bfloat16
    slow = dict(rounds=1, warmup=0) if emulated_bf16 else dict(rounds=rounds)  # emulated bf16: ~40x slower
    tokens = steps * B * T
    attn = atom_attention(device, T)
    rows = []
    m, o = atom_copy()
    rows.append(Contestant("atom_fp32", "ATOM float32", atom_step(m, o, f32), tokens, rounds,
                           settings={"dtype": "float32", "attention": attn["float32"], "optimizer": "AdamW fused"}))
    m, o = hf_copy()
    rows.append(Contestant("hf_fp32", "HF GPT-2 float32 eager", hf_step(m, o, f32), tokens, rounds,
                           settings={"dtype": "float32", "attention": hf.config._attn_implementation,
                                     "optimizer": "AdamW fused"}))
    m, o = atom_copy()
    rows.append(Contestant("atom_bf16", "ATOM bf16 autocast", atom_step(m, o, b16), tokens, **slow,
                           settings={"dtype": "bfloat16", "attention": attn["bfloat16"], "optimizer": "AdamW fused"}))
    m, o = hf_copy()
    rows.append(Contestant("hf_bf16", "HF GPT-2 bf16 autocast", hf_step(m, o, b16), tokens, **slow,
                           settings={"dtype": "bfloat16", "attention": hf.config._attn_implementation,
                                     "optimizer": "AdamW fused"}))
    if auto_dtype not in (f32, b16):  # e.g. fp16 on an older GPU
        m, o = atom_copy()
        name = str(auto_dtype).replace("torch.", "")
        rows.append(Contestant("atom_auto", f"ATOM auto ({name})", atom_step(m, o, auto_dtype), tokens, rounds,
                               settings={"dtype": name, "optimizer": "AdamW fused"}))
    if compile_row:
        m, o = atom_copy()
        compiled = torch.compile(m)
        name = str(auto_dtype).replace("torch.", "")
        rows.append(Contestant("atom_auto_compiled", f"ATOM auto ({name}) + torch.compile",
                               atom_step(compiled, o, auto_dtype), tokens, rounds,
                               settings={"dtype": name, "compile": True, "optimizer": "AdamW fused"}))
    return rows


def atom_attention(device, T: int) -> dict:
    """Which attention kernel ATOM's training forward uses in each dtype at this length."""
    from atomlib.model.kernels import matmul_attention_is_faster

    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        q = torch.empty(1, 1, T, 1, device=device, dtype=dtype)
        out[str(dtype).replace("torch.", "")] = "matmul" if matmul_attention_is_faster(q) else "sdpa"
    return out


# --- generation ----------------------------------------------------------------------------


def generation_contestants(atom, hf, shape: BenchShape, device, rounds: int, gen_dtype) -> list[Contestant]:
    from atomlib.generation.sampling import SamplingParams, generate_nocache
    from atomlib.data.tokenizer import CharTokenizer

    tok = CharTokenizer(shape.chars)
    atom_g = copy.deepcopy(atom).to(device).eval()
    hf_g = copy.deepcopy(hf).to(device).eval()
    prompt = (PROMPT * 4)[:shape.prompt_tokens]
    ids = tok.encode(prompt)
    assert len(ids) == shape.prompt_tokens, "the prompt must encode to one token per character"
    N = shape.new_tokens

    def atom_gen(batch, n=N, cached=True, precision="auto"):
        """GPT.generate (the call a researcher types; sampling's cached loop), or the same loop
        re-encoding its whole window every step (nanoGPT's way, no cache)."""
        idx = torch.tensor([ids] * batch, device=device)
        params = SamplingParams(temperature=1.0, top_k=None, max_new_tokens=n, min_new_tokens=n,
                                num_samples=batch, seed=1, precision=precision)

        def run():
            if cached:
                out = atom_g.generate(idx, n, temperature=1.0, seed=1, precision=precision)
                assert out.shape == (batch, shape.prompt_tokens + n), "ATOM generated a wrong length"
            else:
                out = generate_nocache(atom_g, tok, prompt, params)
                assert len(out) == batch and all(len(g.tokens) == n for g in out), "ATOM generated a wrong length"
        return run

    def hf_gen(batch, n=N):
        inp = torch.tensor([ids] * batch, device=device)
        mask = torch.ones_like(inp)

        @torch.no_grad()
        def run():
            out = hf_g.generate(inp, attention_mask=mask, do_sample=True, top_k=0, max_new_tokens=n,
                                min_new_tokens=n, use_cache=True, pad_token_id=0)
            assert out.shape == (batch, shape.prompt_tokens + n), "HF generated a wrong length"
        return run

    G, w = shape.gen_batch, min(N, 32)  # warm-ups generate a few tokens only
    auto = str(gen_dtype).replace("torch.", "")
    cached = {"kv_cache": True, "precision": auto}
    rows = [
        Contestant("atom_generate_1", "ATOM model.generate, 1 sequence", atom_gen(1), N, rounds,
                   warm=atom_gen(1, w), settings=cached),
        Contestant("hf_generate_1", "HF GPT-2 generate, 1 sequence", hf_gen(1), N, rounds,
                   warm=hf_gen(1, w), settings={"kv_cache": True, "precision": "float32"}),
        # the slowest row by far, and its ratio is far from the target's edge: two rounds are plenty
        Contestant("atom_nocache_1", "ATOM without KV cache, 1 sequence", atom_gen(1, cached=False), N,
                   min(rounds, 2), warm=atom_gen(1, w, cached=False),
                   settings={"kv_cache": False, "window": "crop (nanoGPT)", "precision": auto}),
        Contestant(f"atom_generate_{G}", f"ATOM model.generate, batch of {G}", atom_gen(G), G * N, rounds,
                   warm=atom_gen(G, w), settings=cached),
        Contestant(f"hf_generate_{G}", f"HF GPT-2 generate, batch of {G}", hf_gen(G), G * N, rounds,
                   warm=hf_gen(G, w), settings={"kv_cache": True, "precision": "float32"}),
    ]
    # the kernels alone: how far any decode built on them could go (a bound, not a contestant)
    floor = {"kv_cache": True, "precision": auto, "kernels_only": True}
    for batch, label in ((1, "1 sequence"), (G, f"batch of {G}")):
        rows.append(Contestant(f"atom_kernels_{batch}", f"ATOM kernels alone (floor), {label}",
                               kernel_floor(atom_g, shape, device, batch, gen_dtype), batch * N, rounds,
                               settings=floor))
    if auto != "float32":  # the same engine in float32: how much of the gain is the precision
        f32 = {"kv_cache": True, "precision": "float32"}
        rows += [Contestant("atom_generate_1_fp32", "ATOM model.generate float32, 1 sequence",
                            atom_gen(1, precision="float32"), N, rounds,
                            warm=atom_gen(1, w, precision="float32"), settings=f32),
                 Contestant(f"atom_generate_{G}_fp32", f"ATOM model.generate float32, batch of {G}",
                            atom_gen(G, precision="float32"), G * N, rounds,
                            warm=atom_gen(G, w, precision="float32"), settings=f32)]
    return rows


def kernel_floor(atom_g, shape: BenchShape, device, batch: int, dtype):
    """The generation's kernels alone: a lower bound on the time any decode built on them takes.

    For every step of one generation (the same cache lengths), only the model's linear layers (in
    the generation's precision, activations fused as the model fuses them) and its attention over
    the KV cache run, on inputs made ready beforehand: no embedding, norm, cast, copy, residual
    add, sampling or bookkeeping. Only the calls are timed, each step on one thread and on all of
    them (a CPU), keeping the faster. HF's time over this is the highest generate_vs_hf that these
    kernels allow on this machine."""
    from torch.nn import functional as F

    from atomlib.model.kernels import Linear, bf16_weights

    c = atom_g.config
    H, hd = c.n_head, c.n_embd // c.n_head
    T0, N = shape.prompt_tokens, shape.new_tokens
    linears = [m for m in atom_g.modules() if isinstance(m, Linear)]
    cache = atom_g.new_cache(batch, max_len=T0 + N)
    cache.k.normal_(), cache.v.normal_()
    inputs = [torch.randn(batch, 1, m.in_features, device=device).to(dtype) for m in linears]
    q = torch.randn(batch, H, 1, hd, device=device, dtype=cache.k.dtype)
    have = torch.get_num_threads()
    threads = sorted({1, have}) if device.type == "cpu" else [have]

    def step(end: int):
        for lin, x in zip(linears, inputs):
            lin(x)
        for i in range(c.n_layer):
            F.scaled_dot_product_attention(q, cache.k[i, :, :, :end], cache.v[i, :, :, :end])

    @torch.inference_mode()
    def run() -> float:
        total = 0.0
        try:
            with D.autocast(device, dtype), bf16_weights({}):
                for t in range(N):
                    best = float("inf")
                    for n in threads:
                        torch.set_num_threads(n)
                        D.synchronize(device)
                        t0 = time.perf_counter()
                        step(T0 + t + 1)
                        D.synchronize(device)
                        best = min(best, time.perf_counter() - t0)
                    total += best
        finally:
            torch.set_num_threads(have)
        return total
    return run


@torch.no_grad()
def next_token_kl(atom, shape: BenchShape, device, dtype, steps: int = 20) -> float | None:
    """The largest KL(float32 model || the model decoding in dtype) of the next-token distribution
    over a prefill and `steps` one-token steps: what generating in dtype costs in fidelity."""
    from atomlib.model.kernels import bf16_weights

    if dtype == torch.float32:
        return None
    model = copy.deepcopy(atom).to(device).eval()
    g = torch.Generator().manual_seed(0)
    n = min(shape.positions, shape.prompt_tokens + steps)
    idx = torch.randint(0, shape.vocab_size, (2, n), generator=g).to(device)
    want = torch.log_softmax(model(idx, all_logits=True)[0].float(), -1)
    cache, first = model.new_cache(2), n - steps
    with torch.inference_mode(), D.autocast(device, dtype), bf16_weights({}):
        got = [model(idx[:, :first], cache=cache)[0]]
        got += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(first, n)]
    kl = 0.0
    for t, logits in zip(range(first - 1, n), got):
        p, q = want[:, t], torch.log_softmax(logits[:, -1].float(), -1)
        kl = max(kl, float((p.exp() * (p - q)).sum(-1).max()))
    return kl


# --- the whole benchmark ---------------------------------------------------------------------


def run_bench(config: str = "test", tiny: bool = False, rounds: int | None = None, device: str = "auto",
              compile_row: bool = False, json_path: Path | None = None, quiet: bool = False) -> dict:
    """Run everything, print the table (unless quiet), write the JSON (if asked); return the result."""
    global _QUIET
    _QUIET = quiet
    t0 = time.perf_counter()
    load_start = _loadavg()
    dev = D.pick_device(device)
    shape = bench_shape(config, tiny)
    auto_dtype = D.pick_dtype(dev, "auto")
    if dev.type == "cpu":
        units, fast = D.cpu_has_bf16_units(), D.cpu_bf16_is_fast()
        case = "bf16_units" if units else "no_bf16_units"
    else:
        units, fast, case = None, None, "accelerator"
    emulated = dev.type == "cpu" and not fast
    train_rounds, gen_rounds = (rounds, rounds) if rounds else ((2, 2) if tiny else (5, 3))
    budgets = (None, None) if (rounds or tiny) else (50.0, 75.0)  # keeps `atom bench` under 3 minutes
    steps = 1 if tiny else 2

    _say(f"bench: building the models ({shape.n_layer} layers, {shape.n_head} heads, {shape.n_embd} embd, "
         f"vocab {shape.vocab_size}) on {dev.type}")
    atom, hf = build_models(shape)
    atom.to(dev)
    hf.to(dev)
    check = same_weights_check(atom, hf, shape, dev)
    if not check["ok"]:
        raise RuntimeError(f"ATOM and HF disagree on the same weights (max |logit diff| {check['max_abs_logit_diff']:.2e})")

    peaks = measured_peaks(dev, emulated)
    train = train_contestants(atom, hf, shape, dev, auto_dtype, emulated, train_rounds, steps, compile_row)
    train_s = time_rounds(train, dev, budgets[0], "training")
    peaks = {k: max(v, measured_peaks(dev, emulated)[k]) for k, v in peaks.items()}
    from atomlib.generation.sampling import matmul_dtype

    gen_dtype = matmul_dtype("auto", dev, atom)  # what generation's precision auto picks for this model
    precision_kl = next_token_kl(atom, shape, dev, gen_dtype)
    gen = generation_contestants(atom, hf, shape, dev, gen_rounds, gen_dtype)
    gen_s = time_rounds(gen, dev, budgets[1], "generation")
    # the best of three measurements: a busy moment must not pass for the machine's peak
    peaks = {k: max(v, measured_peaks(dev, emulated)[k]) for k, v in peaks.items()}

    fpt = atom.flops_per_token(shape.block_size)
    train_rows = {}
    for c in train:
        row = summary(c)
        peak = peaks.get(row["dtype"])
        row["mfu"] = fpt * row["tokens_per_s"] / peak if peak else None
        row["step_ms"] = 1000 * row["seconds_per_unit"] / steps
        train_rows[c.key] = row
    auto_name = str(auto_dtype).replace("torch.", "")
    auto_key = {"float32": "atom_fp32", "bfloat16": "atom_bf16"}.get(auto_name, "atom_auto")
    if compile_row:
        auto_key = max((auto_key, "atom_auto_compiled"), key=lambda k: train_rows[k]["tokens_per_s"])
    train_rows["atom_auto"] = {**train_rows[auto_key], "label": f"ATOM auto (= {train_rows[auto_key]['label']})",
                               "same_as": auto_key}
    gen_rows = {c.key: summary(c) for c in gen}
    G = shape.gen_batch

    def ratio(rows, a, b):
        return rows[a]["tokens_per_s"] / rows[b]["tokens_per_s"]

    def best_ratio(rows, a, b):
        return rows[a]["best_tokens_per_s"] / rows[b]["best_tokens_per_s"]

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
    ratios = {k: ratio(*v) for k, v in pairs.items()}
    best = {k: best_ratio(*v) for k, v in pairs.items()}
    for r in (ratios, best):
        r["generate_vs_hf"] = min(r["generate_1_vs_hf"], r[f"generate_{G}_vs_hf"])
        r["generate_ceiling_vs_hf"] = min(r["generate_1_ceiling_vs_hf"], r[f"generate_{G}_ceiling_vs_hf"])
    targets = {k: {"target": t, "value": ratios[k], "met": ratios[k] >= t} for k, t in TARGETS[case].items()}
    load_end = _loadavg()
    worst = max((x[0] for x in (load_start, load_end) if x), default=0.0)
    busy = worst if worst > 1.5 * (os.cpu_count() or 1) else None  # > our own threads' load by a margin

    result = {
        "command": "atom bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "atomlib.evaluation.bench.run_bench",
        "device": dev.type,
        "device_name": D.cpu_model_name() if dev.type == "cpu" else _accelerator_name(dev),
        "dtype": auto_name,
        "dtype_auto": auto_name,
        "generate_dtype_auto": str(gen_dtype).replace("torch.", ""),
        "generate_precision_kl": precision_kl,
        "cpu_bf16_units": units,
        "cpu_bf16_fast": fast,
        "case": case,
        "tiny": tiny,
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "openmp": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")},
        "cpu_count": os.cpu_count(),
        "cpu": {**D.cpu_report(), "flags": sorted(D.cpu_flags())} if dev.type == "cpu" else None,
        "load_average": {"start": load_start, "end": load_end},
        "busy": busy,
        "shape": {k: v for k, v in asdict(shape).items() if k != "chars"} | {"positions": shape.positions},
        "same_weights": check,
        "peak_flops": peaks,
        "flops_per_token": fpt,
        "train": train_rows,
        "generate": gen_rows,
        "ratios": ratios,
        "ratios_best_rounds": best,
        "targets": targets,
        "notes": notes(shape, hf, tiny),
        "seconds": {"train": train_s, "generate": gen_s, "total": time.perf_counter() - t0},
    }
    if not quiet:
        print(format_table(result))
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        _say(f"bench: wrote {json_path}")
    return result


def profile_tables(config: str = "test", tiny: bool = False, device: str = "auto", rows: int = 8) -> str:
    """torch.profiler's top ops (by self CPU time) for one unit of work of the main contestants:
    a training step of ATOM in its auto dtype and of HF in float32, and generation at batch 1 and
    at the generation batch for both. The profile behind the README's explanations."""
    from torch.profiler import ProfilerActivity, profile

    from atomlib.generation.sampling import matmul_dtype

    dev = D.pick_device(device)
    shape = bench_shape(config, tiny)
    auto_dtype = D.pick_dtype(dev, "auto")
    emulated = dev.type == "cpu" and not D.cpu_bf16_is_fast()
    atom, hf = build_models(shape)
    train = {c.key: c for c in train_contestants(atom, hf, shape, dev, auto_dtype, emulated, 1, 1, False)}
    auto_key = {torch.float32: "atom_fp32", torch.bfloat16: "atom_bf16"}.get(auto_dtype, "atom_auto")
    gen = {c.key: c for c in generation_contestants(atom, hf, shape, dev, 1, matmul_dtype("auto", dev, atom))}
    G = shape.gen_batch
    chosen = [train[auto_key], train["hf_fp32"], gen["atom_generate_1"], gen["hf_generate_1"],
              gen[f"atom_generate_{G}"], gen[f"hf_generate_{G}"]]
    out = []
    for c in chosen:
        (c.warm or c.run)()
        D.synchronize(dev)
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            c.run()
            D.synchronize(dev)
        seconds = time.perf_counter() - t0
        out.append(f"== {c.label}: {c.tokens} tokens in {seconds:.2f} s under the profiler "
                   f"({c.settings.get('dtype') or c.settings.get('precision')})")
        out.append(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48))
    return "\n".join(out)


def measured_peaks(dev, emulated: bool) -> dict:
    """Matrix-multiply FLOP/s in float32 and bfloat16, measured now (MFU's denominators)."""
    peaks = {"float32": D.measure_peak_flops(dev, torch.float32, seconds=0.4)}
    # an emulated bf16 product is slow enough that a small one tells the (low) peak
    peaks["bfloat16"] = D.measure_peak_flops(dev, torch.bfloat16, n=512 if emulated else 1024, seconds=0.4)
    return peaks


def notes(shape: BenchShape, hf, tiny: bool) -> list[str]:
    out = [shape.vocab_note,
           f"training runs sequences of {shape.block_size} tokens; both models have a position table of "
           f"{shape.positions} so that HF can generate {shape.prompt_tokens} + {shape.new_tokens} tokens",
           "same weights: a random GPT2LMHeadModel saved with save_pretrained and loaded by GPT.from_pretrained",
           f"HF runs as a user gets it: eager PyTorch, attn_implementation={hf.config._attn_implementation!r}, "
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


# --- output --------------------------------------------------------------------------------


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


_QUIET = False


def _say(msg: str) -> None:
    if not _QUIET:
        print(msg, file=sys.stderr, flush=True)


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _version(package: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(package)
    except Exception:
        return None


def _accelerator_name(dev) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return dev.type


def bench_command(args) -> None:
    """`atom bench [--config NAME] [--json FILE] [--rounds N] [--tiny] [--profile]`."""
    rounds = getattr(args, "rounds", None)
    if rounds is not None and rounds < 1:
        raise AtomError(f"--rounds {rounds} must be at least 1.")
    if getattr(args, "profile", False):
        print(profile_tables(config=args.config, tiny=args.tiny, device=getattr(args, "device", "auto")))
        return
    run_bench(config=args.config, tiny=args.tiny, rounds=rounds, device=getattr(args, "device", "auto"),
              compile_row=getattr(args, "compile", False), json_path=args.json)
