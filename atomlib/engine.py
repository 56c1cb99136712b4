"""Inference for the GPT: the KV-cached forward that generation runs, on weights prepared once.

GPT.forward (model.py) serves training and is the reference: every case, through nn.Modules.
Generation only ever does two things with it: encode a prompt (or a slid window) into the
cache, and feed one new token per row. At the sizes this project trains, such a step is a few
dozen small operations whose cost is reading the weights, so the Engine

- holds the weights as plain tensors and runs the forward as one flat sequence of ops (no
  module dispatch, no autograd bookkeeping, no training-only branches);
- on a CPU with native bf16 (device.pick_dtype says so, from its flags and a probe), runs the
  linear layers in bf16 on weights packed once for oneDNN: half the bytes per token and the
  CPU's bf16 dot products. Measured on AVX512-BF16 at the `test` shape: its 16 linear layers
  alone 2-3x faster than float32 at batch 1 and 8; a whole step, which also pays oneDNN's
  ~15 us per call, as fast at batch 1 and 1.4x faster at batch 8. Everything else (embeddings,
  LayerNorm, attention over the float32 KV cache, the residual stream) stays in float32, much as
  bf16 autocast does in training, so the model samples with the numerics it was trained with;
- elsewhere runs them with F.linear in the chosen dtype (float32: the model's own weights).

The math is GPT.forward's, op for op. `engine_for` checks that once per model, by running the
engine in float32 against the model on a few tokens, and returns None for a model it does not
mirror (a subclass, a changed block) so the caller uses the model's own forward.
"""

from __future__ import annotations

import contextlib
import weakref

import torch
from torch.nn import functional as F

from atomlib.model import GPT, KVCache


class Linear:
    """y = x W^T + b in `dtype`, then GPT-2's tanh GELU if gelu: oneDNN-packed bf16 weights on a
    CPU (the GELU fused into the product, applied before the output is rounded to bf16),
    F.linear elsewhere."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, gelu: bool = False):
        self.dtype, self.gelu = dtype, gelu
        self.packed = dtype == torch.bfloat16 and weight.device.type == "cpu" and onednn_bf16_works()
        w = weight.detach().to(dtype)
        self.w = torch.ops.mkldnn._reorder_linear_weight(w, None) if self.packed else w
        self.b = None if bias is None else bias.detach().to(dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        if self.packed:
            if self.gelu:
                return torch.ops.mkldnn._linear_pointwise(x, self.w, self.b, "gelu", [], "tanh")
            return torch.ops.mkldnn._linear_pointwise(x, self.w, self.b, "none", [], "")
        y = F.linear(x, self.w, self.b)
        return F.gelu(y, approximate="tanh") if self.gelu else y


_ONEDNN_OK: bool | None = None


def onednn_bf16_works() -> bool:
    """Whether PyTorch's oneDNN bf16 linear (a private op that inductor uses) exists here and
    agrees with float32 on a small product. Checked once; without it bf16 runs through F.linear."""
    global _ONEDNN_OK
    if _ONEDNN_OK is None:
        try:
            g = torch.Generator().manual_seed(0)
            w, b, x = (torch.randn(s, generator=g) for s in ((64, 32), (64,), (3, 32)))
            p = torch.ops.mkldnn._reorder_linear_weight(w.bfloat16(), None)
            want = F.linear(x.bfloat16().float(), w.bfloat16().float(), b.bfloat16().float())
            ok = True
            for attr, algo, ref in (("none", "", want), ("gelu", "tanh", F.gelu(want, approximate="tanh"))):
                got = torch.ops.mkldnn._linear_pointwise(x.bfloat16(), p, b.bfloat16(), attr, [], algo).float()
                ok = ok and got.shape == ref.shape and bool(torch.allclose(got, ref, rtol=2e-2, atol=5e-2))
            _ONEDNN_OK = ok
        except (AttributeError, RuntimeError, NotImplementedError):
            _ONEDNN_OK = False
    return _ONEDNN_OK


class Engine:
    """forward(ids, cache) -> logits of each row's last position, float32 (B, V)."""

    def __init__(self, model: GPT, dtype: torch.dtype | None = None):
        c = model.config
        self.config = model.config
        self.dtype = dtype or model.lm_head.weight.dtype
        self.C, self.H, self.D = c.n_embd, c.n_head, c.n_embd // c.n_head
        tr = model.transformer
        self.wte, self.wpe = tr.wte.weight.detach(), tr.wpe.weight.detach()

        def ln(m):
            return (m.weight.detach(), None if m.bias is None else m.bias.detach(), m.eps)

        def lin(m, gelu=False):
            return Linear(m.weight, m.bias, self.dtype, gelu)

        self.layers = [(ln(b.ln_1), lin(b.attn.c_attn), lin(b.attn.c_proj), ln(b.ln_2), lin(b.mlp.c_fc, gelu=True),
                        lin(b.mlp.c_proj)) for b in tr.h]
        self.ln_f = ln(tr.ln_f)
        self.head = Linear(model.lm_head.weight, None, self.dtype)

    def forward(self, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Append ids (B, T) after the cache.pos tokens already cached."""
        B, T = ids.shape
        C, H, D = self.C, self.H, self.D
        pos = cache.pos
        end = pos + T
        if end > self.config.block_size:
            raise ValueError(f"cannot forward {end} positions, block size is {self.config.block_size}")
        mask, causal = None, T > 1
        if T > 1 and pos > 0:  # a chunk after earlier tokens: query i sees keys up to pos + i
            mask, causal = torch.ones(T, end, dtype=torch.bool, device=ids.device).tril(diagonal=pos), False
        x = F.embedding(ids, self.wte) + self.wpe[pos:end]
        for i, (ln_1, c_attn, c_proj, ln_2, c_fc, m_proj) in enumerate(self.layers):
            qkv = c_attn(F.layer_norm(x, (C,), *ln_1)).view(B, T, 3, H, D).transpose(1, 3)  # (B, H, 3, T, D)
            K, V = cache.k[i], cache.v[i]
            K[:, :, pos:end] = qkv[:, :, 1]
            V[:, :, pos:end] = qkv[:, :, 2]
            q = qkv[:, :, 0].to(K.dtype, memory_format=torch.contiguous_format)
            y = F.scaled_dot_product_attention(q, K[:, :, :end], V[:, :, :end], attn_mask=mask, is_causal=causal)
            x = x + c_proj(y.transpose(1, 2).reshape(B, T, C))
            x = x + m_proj(c_fc(F.layer_norm(x, (C,), *ln_2)))  # (c_fc applies the GELU)
        cache.pos = end
        return self.head(F.layer_norm(x[:, -1], (C,), *self.ln_f)).float()


# --- one engine per model and dtype, checked once ---------------------------------------------

# Keyed weakly by the model, so an engine lives as long as its model and no longer (an engine
# holds tensors, never the model itself, or the model could not be collected).
_ENGINES: "weakref.WeakKeyDictionary[GPT, dict]" = weakref.WeakKeyDictionary()


def _signature(model: GPT) -> tuple:
    """Changes when any parameter is replaced or updated in place (optimizer steps, loads)."""
    return tuple((p.data_ptr(), p._version, p.device.type) for p in model.parameters())


@contextlib.contextmanager
def _exact_float32():
    """TF32 off for the check: the trainer turns it on for CUDA matmuls, and with it the same
    product at two shapes can differ by 1e-3, which would fail a mirror that is right."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def mirrors(model: GPT) -> bool:
    """The float32 engine gives the model's own logits on a short sequence: prefill, then steps."""
    c = model.config
    n = min(c.block_size, 6)
    first = max(1, n - 2)  # a prefill of `first` tokens, then single steps
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, c.vocab_size, (2, n), generator=g).to(model.lm_head.weight.device)
    engine = Engine(model, model.lm_head.weight.dtype)
    cache = model.new_cache(2, max_len=n)
    with torch.inference_mode(), _exact_float32():
        want = model(idx, all_logits=True)[0].float()
        got = [engine.forward(idx[:, :first], cache)]
        got += [engine.forward(idx[:, t:t + 1], cache) for t in range(first, n)]
    want = want[:, first - 1:n].transpose(0, 1)
    tol = 1e-4 * max(1.0, float(want.abs().max()))
    return all(torch.allclose(a, b, rtol=1e-4, atol=tol) for a, b in zip(got, want))


def engine_for(model, dtype: torch.dtype | None = None) -> Engine | None:
    """The Engine for this model in dtype (default: its own), built once and reused while its
    weights are unchanged; None when the model is not a GPT the engine mirrors."""
    if type(model) is not GPT:
        return None
    dtype = dtype or model.lm_head.weight.dtype
    entry = _ENGINES.get(model)
    sig = _signature(model)
    if entry is None or entry["signature"] != sig:
        was_training = model.training
        model.eval()
        try:
            entry = {"signature": sig, "ok": mirrors(model), "engines": {}}
        finally:
            model.train(was_training)
        _ENGINES[model] = entry
    if not entry["ok"]:
        return None
    if dtype not in entry["engines"]:
        with torch.inference_mode():
            entry["engines"][dtype] = Engine(model, dtype)
    return entry["engines"][dtype]
