"""The GPT: GPT-2's architecture in one file, with a KV cache for fast generation.

Learned positions, pre-LayerNorm blocks, causal self-attention through PyTorch's fused
scaled_dot_product_attention, a tanh-GELU MLP (as GPT-2 was trained), and input/output
embeddings tied. The interface is nanoGPT's, so its users' code carries over:
GPT(GPTConfig(...)), model(idx, targets) -> (logits, loss), GPT.from_pretrained(...),
configure_optimizers(...), generate(...). Module names match Hugging Face's GPT-2, so its
weights load by name (Conv1D weights transposed).
"""

from __future__ import annotations

import inspect
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn import functional as F

from atomlib.errors import AtomError


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linears and LayerNorms, like GPT-2; False is a bit better and faster


class KVCache:
    """Preallocated keys and values of every layer, so a generation step appends in place.

    k, v: (n_layer, batch, n_head, max_len, head_dim). `pos` counts the tokens already in
    the cache; the model writes the new keys at [pos, pos+T) and then advances it.
    """

    def __init__(self, n_layer, batch_size, n_head, max_len, head_dim, device=None, dtype=None):
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        # empty, not zeros: attention only ever reads positions below pos, all written first
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store this step's keys/values for a layer; return all keys/values so far."""
        t0, t1 = self.pos, self.pos + k.size(2)
        self.k[layer, :, :, t0:t1] = k
        self.v[layer, :, :, t0:t1] = v
        return self.k[layer, :, :, :t1], self.v[layer, :, :, :t1]

    def reset(self):
        self.pos = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # query, key and value projections for all heads, in one matrix
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x, cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        dropout = self.dropout if self.training else 0.0
        if cache is None and matmul_attention_is_faster(q):
            y = causal_attention_matmul(q, k, v, dropout)
            return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))
        mask, causal = None, True
        if cache is not None:
            past = cache.pos
            k, v = cache.update(layer, k, v)
            if T == 1:
                causal = False  # one new token attends to everything before it
            elif past > 0:
                # a chunk after earlier tokens: query i sees keys up to past + i
                causal = False
                mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


def matmul_attention_is_faster(q: torch.Tensor) -> bool:
    """On CPU in bf16, PyTorch's fused SDPA (flash) kernel is 2-4x slower than three plain batched
    matrix products up to 512 tokens (measured, forward + backward, on AVX512-BF16); in float32,
    on GPUs and for longer contexts SDPA is as fast or faster, so it stays the default."""
    return q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.size(-2) <= 512


def causal_attention_matmul(q, k, v, dropout_p: float = 0.0):
    """softmax(q k^T / sqrt(d) + causal mask) v with bmm: the same function SDPA computes."""
    B, H, T, D = q.shape
    q, k, v = (t.reshape(B * H, T, D) for t in (q, k, v))
    mask = torch.full((T, T), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
    att = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=D ** -0.5).softmax(dim=-1)
    if dropout_p > 0:
        att = F.dropout(att, dropout_p)
    return torch.bmm(att, v).view(B, H, T, D)


class SigmoidTanhGELU(torch.autograd.Function):
    """GPT-2's tanh GELU written as x * sigmoid(2 z), z = sqrt(2/pi) (x + 0.044715 x^3): the same
    function (0.5 (1 + tanh z) = sigmoid(2 z)), with its derivative by hand. PyTorch's CPU kernel
    evaluates tanh to full precision and is ~4x slower than erf-GELU; in bf16 this form makes a
    training step ~5% faster (measured). The sigmoid is kept for the backward pass."""

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


class TanhGELU(nn.Module):
    """GPT-2's activation ("gelu_new"), so imported weights stay exact."""

    def forward(self, x):
        if x.dtype == torch.bfloat16 and x.device.type == "cpu":
            return SigmoidTanhGELU.apply(x)
        return F.gelu(x, approximate="tanh")


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = TanhGELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: the output projection is the token embedding (fewer parameters, better).
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections: keeps the residual stream's variance in check.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings are left out by default (as in nanoGPT), and the
        token embedding is counted once because it is tied to the output layer."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx, targets=None, cache: KVCache | None = None, all_logits: bool = False):
        """idx (B, T) token ids -> (logits, loss).

        With targets: logits of every position and the mean cross-entropy. Without: logits of
        the last position only, (B, 1, V), unless all_logits. With a cache, idx holds only the
        new tokens, placed after the cache.pos tokens already cached.
        """
        B, T = idx.size()
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"cannot forward {start + T} positions, block size is {self.config.block_size}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, cache, i)
        if cache is not None:
            cache.pos += T
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
            return logits, loss
        # inference: only the last position's logits are needed (saves a (T, V) matmul)
        logits = self.lm_head(x if all_logits else x[:, [-1], :])
        return logits, None

    def new_cache(self, batch_size: int, max_len: int | None = None, device=None, dtype=None) -> KVCache:
        c = self.config
        p = self.lm_head.weight
        return KVCache(c.n_layer, batch_size, c.n_head, max_len or c.block_size, c.n_embd // c.n_head,
                       device=device or p.device, dtype=dtype or p.dtype)

    def crop_block_size(self, block_size: int):
        """Shrink the context (e.g. GPT-2's 1024 to 256) by cutting the position table."""
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    # --- GPT-2 weights ------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_folder: str | Path, override_args: dict | None = None) -> "GPT":
        """Load Hugging Face GPT-2 weights: 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl', or a
        folder written by GPT2LMHeadModel.save_pretrained. Only dropout may be overridden."""
        override_args = override_args or {}
        assert all(k == "dropout" for k in override_args), "only dropout can be overridden"
        hf = load_hf_gpt2(name_or_folder)
        hc = hf.config
        config = GPTConfig(block_size=hc.n_positions, vocab_size=hc.vocab_size, n_layer=hc.n_layer,
                           n_head=hc.n_head, n_embd=hc.n_embd, bias=True,
                           dropout=override_args.get("dropout", 0.0))
        model = cls(config)
        sd, sd_hf = model.state_dict(), hf.state_dict()
        # HF's Conv1D stores weights as (in, out); nn.Linear wants (out, in).
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        keys = [k for k in sd_hf if not k.endswith((".attn.bias", ".attn.masked_bias"))]
        missing = set(sd) - set(keys)
        if missing:
            raise AtomError(f"{name_or_folder} is not a GPT-2 checkpoint (missing {sorted(missing)[0]}).")
        with torch.no_grad():
            for k in keys:
                w = sd_hf[k].t() if k.endswith(transposed) else sd_hf[k]
                if w.shape != sd[k].shape:
                    raise AtomError(f"{name_or_folder}: weight {k} has shape {tuple(w.shape)}, expected {tuple(sd[k].shape)}.")
                sd[k].copy_(w)
        return model

    # --- training helpers ----------------------------------------------------------------------

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW with weight decay on matrices only (not biases, LayerNorms); fused kernel where available."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        extra = {}
        if "fused" in inspect.signature(torch.optim.AdamW).parameters and device_type in ("cuda", "cpu", "mps"):
            extra["fused"] = True
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12 L H Q T."""
        c = self.config
        T = seq_len or c.block_size
        return 6 * self.get_num_params() + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * T

    def estimate_mfu(self, tokens_per_s: float, peak_flops: float, seq_len: int | None = None) -> float:
        """Model FLOPs utilisation: achieved training FLOP/s over the device's peak."""
        return self.flops_per_token(seq_len) * tokens_per_s / peak_flops

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Sample max_new_tokens after idx (B, T), KV-cached. When the context fills the block,
        the window slides: the last half block is prefilled again into a fresh cache."""
        block = self.config.block_size
        cache = self.new_cache(idx.size(0))
        logits, _ = self(idx[:, -block:], cache=cache)
        for _ in range(max_new_tokens):
            logits = logits[:, -1, :] / max(temperature, 1e-8)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
            nxt = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, nxt), dim=1)
            if cache.pos >= block:
                cache.reset()
                logits, _ = self(idx[:, -(block // 2):], cache=cache)
            else:
                logits, _ = self(nxt, cache=cache)
        return idx


def load_hf_gpt2(name_or_folder):
    """A transformers GPT2LMHeadModel from a local folder, the local hub cache, or the hub, or
    one clear error. Offline it fails in seconds instead of retrying the download for half a minute."""
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its retry warnings would bury our one-line error
    folder = Path(str(name_or_folder)).expanduser()
    try:
        if folder.is_dir():
            return GPT2LMHeadModel.from_pretrained(folder, local_files_only=True)
        try:
            return GPT2LMHeadModel.from_pretrained(str(name_or_folder), local_files_only=True)  # cached
        except OSError:
            pass
        if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
            raise OSError("the Hugging Face hub is unreachable")
        return GPT2LMHeadModel.from_pretrained(str(name_or_folder))
    except Exception as e:  # network errors, missing files, bad folders all end the same way
        raise AtomError(f"could not load GPT-2 weights '{name_or_folder}' ({e.__class__.__name__}: no local folder "
                        "of that name and no copy from the hub); where there is a network, save them with "
                        "GPT2LMHeadModel.from_pretrained(name).save_pretrained(DIR) and use DIR instead.") from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    from urllib.parse import urlsplit

    host = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
