"""What the bench times: the contestants of training and of generation, one unit of work each.

Training: a full step (forward, backward, AdamW step) of ATOM and of HF in float32 (HF as a user
gets it: eager PyTorch, its default attention) and under the same bf16 autocast, plus ATOM in the
dtype `dtype: auto` picks when that is neither (and, if asked, under torch.compile).
Generation: ATOM through GPT.generate (the decode loop that sampling, chat and evaluation share),
HF through GPT2LMHeadModel.generate (pure sampling, its KV cache on), and ATOM without a KV cache
(nanoGPT's way: the whole cropped context re-encoded for every token), for one sequence and for
a batch; and the floor: the generation's kernels alone, a bound on any decode built on them.
"""

from __future__ import annotations

import copy
import time

import torch
from torch.nn import functional as F

from atomlib import device as D
from atomlib.data.tokenizer import CharTokenizer
from atomlib.evaluation.bench_models import BenchShape, hf_attention
from atomlib.evaluation.bench_timing import Contestant
from atomlib.generation.engine import generate_nocache
from atomlib.generation.sampling import SamplingParams
from atomlib.model.kernels import Linear, bf16_weights, matmul_attention_is_faster

PROMPT = "By the river of blood and the moon"
FUSED = {"optimizer": "AdamW fused"}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# --- training ------------------------------------------------------------------------------


def _atom_step(model, opt, x, y, device, dtype, steps: int):
    def run():
        for _ in range(steps):
            with D.autocast(device, dtype):
                _, loss = model(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return run


def _hf_step(model, opt, x, y, device, dtype, steps: int):
    def run():
        for _ in range(steps):
            with D.autocast(device, dtype):
                loss = model(input_ids=x, labels=y).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return run


def _hf_optimizer(model, device) -> torch.optim.AdamW:
    # what transformers' Trainer uses by default with torch >= 2.8: fused AdamW
    fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
    return torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, **fused)


def train_contestants(atom, hf, shape: BenchShape, device, auto_dtype, emulated_bf16: bool,
                      rounds: int, steps: int, compile_row: bool) -> list[Contestant]:
    B, T = shape.batch_size, shape.block_size
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, shape.vocab_size, (B, T), generator=g).to(device)
    y = torch.randint(0, shape.vocab_size, (B, T), generator=g).to(device)
    tokens = steps * B * T

    def atom_row(key, label, dtype, settings, compiled=False, **timing):
        m = copy.deepcopy(atom).to(device).train()
        opt = m.configure_optimizers(0.1, 1e-4, (0.9, 0.95), device.type)
        run = _atom_step(torch.compile(m) if compiled else m, opt, x, y, device, dtype, steps)
        return Contestant(key, label, run, tokens, **(timing or {"rounds": rounds}), settings={**settings, **FUSED})

    def hf_row(key, label, dtype, **timing):
        m = copy.deepcopy(hf).to(device).train()
        run = _hf_step(m, _hf_optimizer(m, device), x, y, device, dtype, steps)
        settings = {"dtype": dtype_name(dtype), "attention": hf_attention(hf), **FUSED}
        return Contestant(key, label, run, tokens, **(timing or {"rounds": rounds}), settings=settings)

    f32, b16 = torch.float32, torch.bfloat16
    slow = dict(rounds=1, warmup=0) if emulated_bf16 else {}  # emulated bf16 is far slower: one round tells
    attn = atom_attention(device, T)
    rows = [atom_row("atom_fp32", "ATOM float32", f32, {"dtype": "float32", "attention": attn["float32"]}),
            hf_row("hf_fp32", "HF GPT-2 float32 eager", f32),
            atom_row("atom_bf16", "ATOM bf16 autocast", b16, {"dtype": "bfloat16", "attention": attn["bfloat16"]},
                     **slow),
            hf_row("hf_bf16", "HF GPT-2 bf16 autocast", b16, **slow)]
    name = dtype_name(auto_dtype)
    if auto_dtype not in (f32, b16):  # e.g. fp16 on an older GPU
        rows.append(atom_row("atom_auto", f"ATOM auto ({name})", auto_dtype, {"dtype": name}))
    if compile_row:
        rows.append(atom_row("atom_auto_compiled", f"ATOM auto ({name}) + torch.compile", auto_dtype,
                             {"dtype": name, "compile": True}, compiled=True))
    return rows


def atom_attention(device, T: int) -> dict:
    """Which attention kernel ATOM's training forward uses in each dtype at this length."""
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        q = torch.empty(1, 1, T, 1, device=device, dtype=dtype)
        out[dtype_name(dtype)] = "matmul" if matmul_attention_is_faster(q) else "sdpa"
    return out


# --- generation ----------------------------------------------------------------------------


def _atom_gen(model, tok, prompt: str, shape: BenchShape, device, batch: int, n: int, cached: bool = True,
              precision: str = "auto"):
    """GPT.generate (the call a researcher types; the engine's cached loop), or the same loop
    re-encoding its whole window every step (nanoGPT's way, no cache)."""
    idx = torch.tensor([tok.encode(prompt)] * batch, device=device)
    params = SamplingParams(temperature=1.0, top_k=None, max_new_tokens=n, min_new_tokens=n,
                            num_samples=batch, seed=1, precision=precision)

    def run():
        if cached:
            out = model.generate(idx, n, temperature=1.0, seed=1, precision=precision)
            assert out.shape == (batch, shape.prompt_tokens + n), "ATOM generated a wrong length"
        else:
            out = generate_nocache(model, tok, prompt, params)
            assert len(out) == batch and all(len(g.tokens) == n for g in out), "ATOM generated a wrong length"
    return run


def _hf_gen(model, ids: list[int], shape: BenchShape, device, batch: int, n: int):
    inp = torch.tensor([ids] * batch, device=device)
    mask = torch.ones_like(inp)

    @torch.no_grad()
    def run():
        out = model.generate(inp, attention_mask=mask, do_sample=True, top_k=0, max_new_tokens=n,
                             min_new_tokens=n, use_cache=True, pad_token_id=0)
        assert out.shape == (batch, shape.prompt_tokens + n), "HF generated a wrong length"
    return run


def generation_contestants(atom, hf, shape: BenchShape, device, rounds: int, gen_dtype) -> list[Contestant]:
    tok = CharTokenizer(shape.chars)
    atom_g = copy.deepcopy(atom).to(device).eval()
    hf_g = copy.deepcopy(hf).to(device).eval()
    prompt = (PROMPT * 4)[:shape.prompt_tokens]
    ids = tok.encode(prompt)
    assert len(ids) == shape.prompt_tokens, "the prompt must encode to one token per character"
    N, G, w = shape.new_tokens, shape.gen_batch, min(shape.new_tokens, 32)  # warm-ups generate a few tokens only
    auto = dtype_name(gen_dtype)

    def atom_row(key, label, batch, n_rounds=rounds, cached=True, precision="auto", settings=None):
        def gen(n):
            return _atom_gen(atom_g, tok, prompt, shape, device, batch, n, cached, precision)
        return Contestant(key, label, gen(N), batch * N, n_rounds, warm=gen(w),
                          settings=settings or {"kv_cache": True, "precision": auto})

    def hf_row(key, label, batch):
        return Contestant(key, label, _hf_gen(hf_g, ids, shape, device, batch, N), batch * N, rounds,
                          warm=_hf_gen(hf_g, ids, shape, device, batch, w),
                          settings={"kv_cache": True, "precision": "float32"})

    rows = [atom_row("atom_generate_1", "ATOM model.generate, 1 sequence", 1),
            hf_row("hf_generate_1", "HF GPT-2 generate, 1 sequence", 1),
            # the slowest row by far, and its ratio is far from the target's edge: two rounds are plenty
            atom_row("atom_nocache_1", "ATOM without KV cache, 1 sequence", 1, min(rounds, 2), cached=False,
                     settings={"kv_cache": False, "window": "crop (nanoGPT)", "precision": auto}),
            atom_row(f"atom_generate_{G}", f"ATOM model.generate, batch of {G}", G),
            hf_row(f"hf_generate_{G}", f"HF GPT-2 generate, batch of {G}", G)]
    # the kernels alone: how far any decode built on them could go (a bound, not a contestant)
    floor = {"kv_cache": True, "precision": auto, "kernels_only": True}
    for batch, label in ((1, "1 sequence"), (G, f"batch of {G}")):
        rows.append(Contestant(f"atom_kernels_{batch}", f"ATOM kernels alone (floor), {label}",
                               kernel_floor(atom_g, shape, device, batch, gen_dtype), batch * N, rounds,
                               settings=floor))
    if auto != "float32":  # the same engine in float32: how much of the gain is the precision
        f32 = {"kv_cache": True, "precision": "float32"}
        rows += [atom_row("atom_generate_1_fp32", "ATOM model.generate float32, 1 sequence", 1,
                          precision="float32", settings=f32),
                 atom_row(f"atom_generate_{G}_fp32", f"ATOM model.generate float32, batch of {G}", G,
                          precision="float32", settings=f32)]
    return rows


def kernel_floor(atom_g, shape: BenchShape, device, batch: int, dtype):
    """The generation's kernels alone: a lower bound on the time any decode built on them takes.

    For every step of one generation (the same cache lengths), only the model's linear layers (in
    the generation's precision, activations fused as the model fuses them) and its attention over
    the KV cache run, on inputs made ready beforehand: no embedding, norm, cast, copy, residual
    add, sampling or bookkeeping. Only the calls are timed, each step on one thread and on all of
    them (a CPU), keeping the faster. HF's time over this is the highest generate_vs_hf that these
    kernels allow on this machine."""
    c = atom_g.config
    T0, N = shape.prompt_tokens, shape.new_tokens
    linears = [m for m in atom_g.modules() if isinstance(m, Linear)]
    cache = atom_g.new_cache(batch, max_len=T0 + N)
    cache.k.normal_(), cache.v.normal_()
    layers = [cache.layer(i, T0 + N) for i in range(c.n_layer)]
    inputs = [torch.randn(batch, 1, m.in_features, device=device).to(dtype) for m in linears]
    q = torch.randn(batch, c.n_head, 1, c.n_embd // c.n_head, device=device, dtype=cache.k.dtype)
    have = torch.get_num_threads()
    threads = sorted({1, have}) if device.type == "cpu" else [have]

    def step(end: int):
        for lin, x in zip(linears, inputs):
            lin(x)
        for k, v in layers:
            F.scaled_dot_product_attention(q, k[:, :, :end], v[:, :, :end])

    @torch.inference_mode()
    def run() -> float:
        total = 0.0
        try:
            with D.autocast(device, dtype), bf16_weights({}):
                for t in range(N):
                    total += _fastest(step, T0 + t + 1, threads, device)
        finally:
            torch.set_num_threads(have)
        return total
    return run


def _fastest(step, end: int, threads: list[int], device) -> float:
    """Seconds of step(end) on the fastest of these thread counts."""
    best = float("inf")
    for n in threads:
        torch.set_num_threads(n)
        D.synchronize(device)
        t0 = time.perf_counter()
        step(end)
        D.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best
