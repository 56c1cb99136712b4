"""CPU fast paths that the model's forward calls: the same math, fewer passes over memory.

Nothing here is a second model. `GPT.forward` (model.py) is the only forward; where a faster
kernel computes the same function on this hardware, the module calls it from here:

- `Linear`: nn.Linear with an optional activation. In bf16 inference on a CPU (autocast to
  bf16, no gradient) inside `bf16_weights(store)`, as the decode loop and the evaluation run
  it, its weights are cast once, packed for oneDNN and kept in `store` for the rest of that
  generation, and the activation runs inside the product. Plain autocast would cast the
  float32 weights again on every call, which costs more than the product at decode sizes.
  The packed product is a private oneDNN op (torch.ops.mkldnn, the one inductor uses); where a
  build lacks it or it disagrees with a bf16 product (`onednn_bf16_works`), the same bf16
  weights go through the public F.linear instead: the same function, only slower.
- `causal_attention`: PyTorch's fused SDPA, except on a CPU in bf16 up to 512 tokens, where
  three batched matrix products are faster (forward and backward).
- `cached_attention`: one query chunk against the KV cache, kept in the cache's precision
  (float32), outside autocast: PyTorch's CPU attention over a long cache is slower in bf16;
  `masked_attention` the same for rows at different lengths (a per-row mask).
- the activations: GPT-2's tanh GELU (in bf16 on a CPU as x * sigmoid(2z), which avoids
  PyTorch's full-precision tanh kernel there) and ReLU squared.
"""

from __future__ import annotations

import contextlib
import math
from contextvars import ContextVar

import torch
import torch.nn as nn
from torch.nn import functional as F

ACTIVATIONS = ("gelu", "relu2")  # gelu: GPT-2's tanh approximation ("gelu_new")


# --- activations -----------------------------------------------------------------------------


class SigmoidTanhGELU(torch.autograd.Function):
    """GPT-2's tanh GELU written as x * sigmoid(2 z), z = sqrt(2/pi) (x + 0.044715 x^3): the same
    function (0.5 (1 + tanh z) = sigmoid(2 z)), with its derivative by hand. PyTorch's CPU kernel
    evaluates tanh to full precision, which is slow in bf16 and buys nothing at bf16's rounding.
    The sigmoid is kept for the backward pass."""

    K = 2 * math.sqrt(2 / math.pi)
    C = 0.044715

    @staticmethod
    def forward(ctx, x):
        K, C = SigmoidTanhGELU.K, SigmoidTanhGELU.C
        s = torch.addcmul(x, x * x, x, value=C).mul_(K).sigmoid_()  # sigmoid(2z)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, grad):
        K, C = SigmoidTanhGELU.K, SigmoidTanhGELU.C
        x, s = ctx.saved_tensors
        dz = (x * x).mul_(3 * C * K).add_(K)  # d(2z)/dx
        # d/dx [x s] = s + x s (1 - s) d(2z)/dx
        return torch.addcmul(s, s, s, value=-1).mul_(dz).mul_(x).add_(s).mul_(grad)


def activate(x: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation is None:
        return x
    if activation == "relu2":
        return F.relu(x).square()
    if x.dtype == torch.bfloat16 and x.device.type == "cpu":
        return SigmoidTanhGELU.apply(x)
    return F.gelu(x, approximate="tanh")


# --- linear layers ---------------------------------------------------------------------------


class Linear(nn.Linear):
    """nn.Linear followed by an optional activation ("gelu", "relu2"); same parameters and names,
    so GPT-2 weights and old checkpoints load unchanged."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str | None = None):
        super().__init__(in_features, out_features, bias=bias)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        store = _STORE.get()
        if store is not None and x.device.type == "cpu" and _bf16_inference():
            return _bf16_linear(self, x, store)
        return activate(F.linear(x, self.weight, self.bias), self.activation)


# The bf16 weights of the generation (or evaluation) in progress: a context variable, so two
# generations in two threads (a chat UI's worker and a notebook cell) never share copies.
_STORE: ContextVar[dict | None] = ContextVar("atom_bf16_weights", default=None)


@contextlib.contextmanager
def bf16_weights(store: dict | None):
    """Within this block, bf16 inference on a CPU casts (and packs) each Linear's weights once
    into `store` and reuses them (None: plain layers). Keep one store for one generation and drop
    it after: weights that change later (an optimizer step) are never served from an old copy."""
    token = _STORE.set(store)
    try:
        yield
    finally:
        _STORE.reset(token)


def _bf16_inference() -> bool:
    """Autocast to bf16 on the CPU with no gradient to keep: generation or evaluation."""
    return (not torch.is_grad_enabled() and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def _bf16_linear(layer: Linear, x: torch.Tensor, store: dict) -> torch.Tensor:
    entry = store.get(layer)
    if entry is None:
        w = layer.weight.detach().bfloat16()
        b = None if layer.bias is None else layer.bias.detach().bfloat16()
        packed = onednn_bf16_works()
        entry = store[layer] = (torch.ops.mkldnn._reorder_linear_weight(w, None) if packed else w, b, packed)
    w, b, packed = entry
    x = x.to(torch.bfloat16)
    if packed:
        if layer.activation == "gelu":  # fused into the product, before the output is rounded to bf16
            return torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [], "tanh")
        y = torch.ops.mkldnn._linear_pointwise(x, w, b, "none" if layer.activation is None else "relu", [], "")
        return y.square() if layer.activation == "relu2" else y
    return activate(F.linear(x, w, b), layer.activation)


_ONEDNN_OK: bool | None = None


def onednn_bf16_works() -> bool:
    """Whether PyTorch's oneDNN bf16 linear (a private op that inductor uses) exists here and agrees
    with a bf16 product on a small case, activations included. Checked once; without it the cached
    bf16 weights go through F.linear (the public path), so a torch that drops or changes the
    private op costs speed, never correctness."""
    global _ONEDNN_OK
    if _ONEDNN_OK is None:
        try:
            with torch.autocast("cpu", enabled=False):
                _ONEDNN_OK = _onednn_agrees()
        except (AttributeError, RuntimeError, NotImplementedError):
            _ONEDNN_OK = False
    return _ONEDNN_OK


def _onednn_agrees() -> bool:
    g = torch.Generator().manual_seed(0)
    w, b, x = (torch.randn(s, generator=g) for s in ((64, 32), (64,), (3, 32)))
    p = torch.ops.mkldnn._reorder_linear_weight(w.bfloat16(), None)
    want = F.linear(x.bfloat16().float(), w.bfloat16().float(), b.bfloat16().float())
    for attr, algo, ref in (("none", "", want), ("gelu", "tanh", F.gelu(want, approximate="tanh")),
                            ("relu", "", F.relu(want))):
        got = torch.ops.mkldnn._linear_pointwise(x.bfloat16(), p, b.bfloat16(), attr, [], algo).float()
        if got.shape != ref.shape or not torch.allclose(got, ref, rtol=2e-2, atol=5e-2):
            return False
    return True


# --- attention -------------------------------------------------------------------------------


def matmul_attention_is_faster(q: torch.Tensor) -> bool:
    """On a CPU in bf16, PyTorch's fused SDPA kernel is slower than three plain batched matrix
    products up to 512 tokens (forward + backward); in float32, on GPUs and for longer contexts
    SDPA is as fast or faster, so it stays the default."""
    return q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.size(-2) <= 512


def causal_attention(q, k, v, dropout_p: float = 0.0) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + causal mask) v for q, k, v of shape (B, H, T, D)."""
    if not matmul_attention_is_faster(q):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
    return causal_attention_matmul(q, k, v, dropout_p)


def causal_attention_matmul(q, k, v, dropout_p: float = 0.0) -> torch.Tensor:
    """The function SDPA computes, as baddbmm + softmax + bmm."""
    B, H, T, D = q.shape
    q, k, v = (t.reshape(B * H, T, D) for t in (q, k, v))
    mask = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
    att = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=D ** -0.5).softmax(dim=-1)
    if dropout_p > 0:
        att = F.dropout(att, dropout_p)
    return torch.bmm(att, v).view(B, H, T, D)


def cached_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int) -> torch.Tensor:
    """q (B, H, T, D) at positions past..past+T-1 against all keys/values k, v (B, H, past+T, D),
    in the cache's dtype: the chunk sees everything before it and itself causally."""
    T = q.size(2)
    mask, causal = None, T > 1
    if T > 1 and past > 0:  # a chunk after earlier tokens: query i sees keys up to past + i
        mask = torch.ones(T, past + T, dtype=torch.bool, device=q.device).tril(diagonal=past)
        causal = False
    q = q.to(k.dtype)
    if torch.is_autocast_enabled(q.device.type):
        with torch.autocast(q.device.type, enabled=False):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """q (B, H, T, D) against k, v (B, H, L, D) where mask (B, 1, T, L) is true: rows of a batch at
    different lengths (RowCache), in the cache's dtype like cached_attention."""
    q = q.to(k.dtype)
    if torch.is_autocast_enabled(q.device.type):
        with torch.autocast(q.device.type, enabled=False):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
