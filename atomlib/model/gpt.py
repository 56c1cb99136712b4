"""The GPT: one decoder-only transformer, GPT-2's layout or a modern one, with a KV cache.

One forward serves everything: training, evaluation, sampling, chat and the benchmark. With
a cache it appends the new tokens after those already cached, so generation feeds one token
a step; the CPU fast paths it calls live in kernels.py and compute the same function.

The layout is chosen by switches in GPTConfig. Their defaults are GPT-2's, so GPT-2 weights
and runs saved before the switches existed load unchanged:

    GPT-2 (default)                 modern switch (modded-nanogpt, nanochat)
    learned position embeddings     pos_emb="rope": rotary embeddings on queries and keys
    LayerNorm                       norm="rmsnorm"
    -                               qk_norm=True: queries and keys RMS-normalised per head (no gain)
    tanh-GELU MLP                   mlp="relu2": ReLU squared
    output head = token embedding   tie_embeddings=False: a head of its own
    biases                          bias=False
    -                               logit_softcap=c: logits = c tanh(logits / c)
    GPT-2's init                    zero_init=True: output projections (and an untied head) start at 0

The interface is nanoGPT's, so its users' code carries over: GPT(GPTConfig(...)),
model(idx, targets) -> (logits, loss), GPT.from_pretrained(...), generate(...). Module names
match Hugging Face's GPT-2, so its weights load by name (gpt2_import.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from atomlib.generation.engine import decode_ids
from atomlib.generation.sampling import SamplingParams
from atomlib.model.gpt2_import import copy_gpt2_weights, gpt2_shape, load_hf_gpt2
from atomlib.model.cache import KVCache, RowCache
from atomlib.model.kernels import Linear, causal_attention
from atomlib.model.layout import CHOICES, Layout
from atomlib.training.optim import adamw


@dataclass
class GPTConfig(Layout):
    """The model's shape; the architecture switches come from layout.Layout (GPT-2's by default)."""

    block_size: int = 1024
    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linears and LayerNorms, like GPT-2
    rope_base: float = 10000.0

    def __post_init__(self):
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"GPTConfig.{key} must be one of {allowed}, not {getattr(self, key)!r}")
        if self.n_embd % self.n_head or (self.pos_emb == "rope" and (self.n_embd // self.n_head) % 2):
            raise ValueError("n_embd must split into n_head heads (of even size with rope)")


def make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=1e-5)
    return nn.LayerNorm(config.n_embd, bias=config.bias)


def rotary_tables(block_size: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position x frequency, (block_size, head_dim / 2) each (RoFormer, Su et al. 2021)."""
    freqs = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float32), freqs)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i + D/2}) of x (B, H, T, D) by its position's angle."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        C = config.n_embd
        # query, key and value projections for all heads, in one matrix
        self.c_attn = Linear(C, 3 * C, bias=config.bias)
        self.c_proj = Linear(C, C, bias=config.bias)
        self.n_head, self.dropout, self.qk_norm = config.n_head, config.dropout, config.qk_norm

    def forward(self, x, rope=None, cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.size()
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, T, D) each
        if self.qk_norm:  # unit RMS per head, no gain (as in nanochat): bounded attention logits
            q, k = F.rms_norm(q, (q.size(-1),), eps=1e-5), F.rms_norm(k, (k.size(-1),), eps=1e-5)
        if rope is not None:
            cos, sin = (t.to(q.dtype) for t in rope)  # keep bf16 under autocast (float32 tables would promote)
            if cos.dim() == 3:  # per-row positions (B, T, D/2): broadcast over the heads
                cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            y = cache.attend(layer, q, k, v)
        else:
            y = causal_attention(q, k, v, self.dropout if self.training else 0.0)
        y = self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return F.dropout(y, self.dropout, self.training) if self.dropout else y


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias, activation=config.mlp)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x):
        y = self.c_proj(self.c_fc(x))  # (c_fc applies the activation)
        return F.dropout(y, self.dropout, self.training) if self.dropout else y


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(self, x, rope=None, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), rope, cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        parts = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if config.pos_emb == "learned":
            parts["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        parts.update(h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]), ln_f=make_norm(config))
        self.transformer = nn.ModuleDict(parts)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:  # the output projection is the token embedding (GPT-2)
            self.transformer.wte.weight = self.lm_head.weight
        if config.pos_emb == "rope":  # derived from the config, so not saved with the weights
            cos, sin = rotary_tables(config.block_size, config.n_embd // config.n_head, config.rope_base)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                if config.zero_init:  # each block starts as the identity; the residual stream grows from there
                    nn.init.zeros_(p)
                else:  # GPT-2's scaled init keeps the residual stream's variance in check
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.zero_init and not config.tie_embeddings:
            nn.init.zeros_(self.lm_head.weight)  # the first prediction is uniform

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings are left out by default (as in nanoGPT). A tied
        token embedding is counted once."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx, targets=None, cache: KVCache | None = None, all_logits: bool = False):
        """idx (B, T) token ids -> (logits, loss).

        With targets: logits of every position and the mean cross-entropy (targets of -1 are
        ignored). Without: logits of the last position only, (B, 1, V), unless all_logits. With
        a cache, idx holds only the new tokens, placed after the tokens already cached (a RowCache:
        after each row's own).
        """
        B, T = idx.size()
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"cannot forward {start + T} positions, block size is {self.config.block_size}")
        where = cache.positions(T) if cache is not None else slice(0, T)  # a slice, or (B, T) per row
        x = self.transformer.wte(idx)
        rope = None
        if self.config.pos_emb == "learned":
            x = x + self.transformer.wpe.weight[where]
        else:
            rope = (self.rope_cos[where], self.rope_sin[where])
        if self.config.dropout:
            x = F.dropout(x, self.config.dropout, self.training)
        for i, block in enumerate(self.transformer.h):
            x = block(x, rope, cache, i)
        if cache is not None:
            cache.advance(T)
        x = self.transformer.ln_f(x)
        if targets is None and not all_logits:
            x = x[:, -1:, :]  # inference: only the last position's logits are needed
        logits = self.lm_head(x)
        if self.config.logit_softcap:
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits.float() / cap)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def new_cache(self, batch_size: int, max_len: int | None = None, device=None, dtype=None) -> KVCache:
        c = self.config
        p = self.transformer.wte.weight
        return KVCache(c.n_layer, batch_size, c.n_head, max_len or c.block_size, c.n_embd // c.n_head,
                       device=device or p.device, dtype=dtype or p.dtype)

    def new_row_cache(self, max_rows: int, device=None, dtype=None) -> RowCache:
        c = self.config
        p = self.transformer.wte.weight
        return RowCache(c.n_layer, max_rows, c.n_head, c.block_size, c.n_embd // c.n_head,
                        device=device or p.device, dtype=dtype or p.dtype)

    def crop_block_size(self, block_size: int):
        """Shrink the context (e.g. GPT-2's 1024 to 256): cut the position table or rotary tables."""
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        if "wpe" in self.transformer:
            self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])
        else:
            self.rope_cos, self.rope_sin = self.rope_cos[:block_size], self.rope_sin[:block_size]

    def param_kinds(self) -> dict[str, list[nn.Parameter]]:
        """The parameters by role, each once: "matrix" (the blocks' 2-D weights), "embedding"
        (token and position tables; a tied head is the token table), "head" (an untied output
        layer) and "scalar" (norm gains and biases). The optimizer gives each its own rate."""
        kinds = {"matrix": [], "embedding": [], "head": [], "scalar": []}
        seen = set()
        for name, p in self.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            if name.startswith(("transformer.wte", "transformer.wpe")):
                kinds["embedding"].append(p)
            elif name.startswith("lm_head"):
                kinds["head"].append(p)
            elif p.dim() == 2:
                kinds["matrix"].append(p)
            else:
                kinds["scalar"].append(p)
        return kinds

    # --- GPT-2 weights ------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_folder, override_args: dict | None = None) -> "GPT":
        """Hugging Face GPT-2 weights: 'gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl', or a folder
        written by GPT2LMHeadModel.save_pretrained. Only dropout may be overridden."""
        override_args = override_args or {}
        assert all(k == "dropout" for k in override_args), "only dropout can be overridden"
        hf = load_hf_gpt2(name_or_folder)
        model = cls(GPTConfig(**gpt2_shape(hf.config), dropout=override_args.get("dropout", 0.0)))
        copy_gpt2_weights(model, hf.state_dict(), name_or_folder)
        return model

    # --- training helpers ----------------------------------------------------------------------

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """nanoGPT's optimizer: AdamW with weight decay on matrices only (atomlib.training.optim has the rest)."""
        return adamw(self, learning_rate, weight_decay, betas, device_type)

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12 L H Q T."""
        c = self.config
        T = seq_len or c.block_size
        return 6 * self.get_num_params() + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * T

    def estimate_mfu(self, tokens_per_s: float, peak_flops: float, seq_len: int | None = None) -> float:
        """Model FLOPs utilisation: achieved training FLOP/s over the device's peak."""
        return self.flops_per_token(seq_len) * tokens_per_s / peak_flops

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None, precision="auto"):
        """Sample max_new_tokens after each row of idx (B, T) and return idx with them appended,
        as nanoGPT's generate does; this is the decode loop of atomlib.generation.engine (KV cache,
        matrix products in `precision`, the window sliding past block_size). Without a seed the
        draw comes from torch's global generator, so torch.manual_seed makes it reproducible."""
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens,
                                min_new_tokens=max_new_tokens, num_samples=idx.size(0), seed=seed,
                                stop_at_eot=False, precision=precision)
        return torch.cat((idx, decode_ids(self, idx, params).to(idx.device)), dim=1)
