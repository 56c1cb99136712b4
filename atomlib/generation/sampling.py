"""The sampling controls: what decides which token a step picks, given the model's logits.

`SamplingParams` holds every control; the decode loop (engine.py) hands each step's logits to a
`TokenSampler`, which applies them in this order (each function below is public and tested):

1. repetition penalty (CTRL: positive logits divided, negative multiplied, for tokens seen in
   the last `repetition_window` tokens of prompt + generation);
2. frequency and presence penalties (OpenAI: over the generated tokens);
3. the end-of-text ban before `min_new_tokens`;
4. temperature (0 = greedy), top-k, top-p;
5. the draw, with the run's own torch.Generator (never the global RNG), so a seed reproduces
   a batch exactly.

Everything acts on (B, V) float tensors on the model's device, so a step never waits for the host.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from atomlib.errors import AtomError

PRECISIONS = ("auto", "float32", "bfloat16", "float16")


@dataclass
class SamplingParams:
    """Everything that decides what a generation looks like. Zero/None switch a control off."""

    temperature: float = 0.8  # 0 = greedy (argmax after the penalties)
    top_k: int | None = None  # keep the k most likely tokens (ties at the k-th value are kept)
    top_p: float | None = None  # nucleus: the smallest set of tokens whose probability reaches p
    repetition_penalty: float = 1.0  # CTRL-style, > 1 discourages tokens seen in the recent window
    repetition_window: int = 64  # tokens (prompt + generated) the repetition penalty looks back over
    frequency_penalty: float = 0.0  # subtracted once per earlier occurrence in the generated tokens
    presence_penalty: float = 0.0  # subtracted once if the token occurs in the generated tokens
    min_new_tokens: int = 0  # no stop string / end-of-text may end a generation before this many tokens
    max_new_tokens: int = 200
    stop: tuple[str, ...] = ()  # stop strings; the returned text ends before the first one
    seed: int | None = None  # None: a fresh random seed each call
    num_samples: int = 1  # generated together, as one batch
    stop_at_eot: bool = True  # GPT-2 BPE: end a sample at <|endoftext|> (char vocabularies have none)
    window_keep: int | None = None  # tokens kept when the window slides past block_size (None: half a block)
    precision: str = "auto"  # matrix products in: auto (what training's dtype auto picks here), float32, bfloat16, float16

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(s for s in (self.stop or ()) if s)
        if self.top_k == 0:
            self.top_k = None

    def replace(self, **changes) -> "SamplingParams":
        return dataclasses.replace(self, **changes)

    def checked(self) -> "SamplingParams":
        """self, after checking every value; a bad one raises AtomError naming it."""
        for key in ("temperature", "repetition_penalty", "frequency_penalty", "presence_penalty"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                self._bad(key, "use a finite number")
        if self.temperature < 0:
            self._bad("temperature", "use 0 for greedy decoding or a positive number")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            self._bad("top_k", "use a positive integer, or None to switch it off")
        if self.top_p is not None and (not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1):
            self._bad("top_p", "use a number in (0, 1], or None to switch it off")
        if self.repetition_penalty <= 0:
            self._bad("repetition_penalty", "use a positive number (1.0 switches it off)")
        for key, low in (("repetition_window", 1), ("min_new_tokens", 0), ("max_new_tokens", 0), ("num_samples", 1)):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                self._bad(key, f"use an integer >= {low}")
        if self.min_new_tokens > self.max_new_tokens:
            self._bad("min_new_tokens", f"it cannot exceed max_new_tokens={self.max_new_tokens}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            self._bad("seed", "use an integer or None")
        if self.window_keep is not None and (not isinstance(self.window_keep, int) or self.window_keep < 1):
            self._bad("window_keep", "use a positive integer no larger than the block size")
        if self.precision not in PRECISIONS:
            self._bad("precision", "use one of " + ", ".join(PRECISIONS))
        return self

    def _bad(self, key: str, rule: str):
        raise AtomError(f"sampling parameter {key}={getattr(self, key)!r} is invalid: {rule}.")


# --- logits processors (all act on a (B, V) float tensor) ----------------------------------------


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019): for tokens where `seen` (B, V) is true, divide a
    positive logit by `penalty` and multiply a negative one, so the token gets less likely."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def apply_frequency_presence(logits: torch.Tensor, counts: torch.Tensor, frequency: float,
                             presence: float) -> torch.Tensor:
    """OpenAI's penalties: logit - frequency * count - presence * (count > 0), counts (B, V)."""
    if frequency:
        logits = logits - frequency * counts
    if presence:
        logits = logits - presence * (counts > 0).to(logits.dtype)
    return logits


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Logits below the k-th largest of each row set to -inf (ties with the k-th are kept)."""
    if k is None or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2019): keep the smallest set of most likely tokens
    whose probabilities sum to at least p (always at least one token); the rest get -inf."""
    if p is None or p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # probability mass of the strictly more likely tokens
    drop_sorted = before >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """top-k, then top-p (the order Hugging Face uses)."""
    return top_p_filter(top_k_filter(logits, top_k), top_p)


def next_token_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution one step samples from, for a (B, V) row of raw logits with no history
    (penalties need a history and are left out). Greedy gives a one-hot row."""
    if params.temperature == 0:
        return F.one_hot(logits.argmax(-1), logits.size(-1)).to(logits.dtype)
    return torch.softmax(filter_logits(logits / params.temperature, params.top_k, params.top_p), dim=-1)


def sample_from_probs(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row, drawn from probs (B, V) (need not sum to 1) by inverting the CDF with
    one uniform number per row: an exact draw, with no host sync and less work than
    torch.multinomial on a large vocabulary."""
    cdf = probs.cumsum(-1)
    u = torch.rand((probs.size(0), 1), generator=generator, device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=probs.size(-1) - 1).squeeze(1)


# --- one run's sampler -------------------------------------------------------------------------


class TokenSampler:
    """The controls of one generation, applied step after step: the penalties' token counts, the
    end-of-text ban and the run's own random generator. What a run needs is decided once here, so
    a step does no avoidable work (no penalty tensors when the penalties are off).

    seq (B, T) holds the prompt in seq[:, :start] and receives each drawn token after it; the
    loop writes the token at seq[:, end] and then calls observe(seq, end)."""

    def __init__(self, params: SamplingParams, seq: torch.Tensor, start: int, vocab_size: int, eot: int | None):
        self.params = params
        batch, dev = seq.size(0), seq.device
        self.generator = torch.Generator(device=dev)
        if params.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(params.seed)
        self.ones = torch.ones((batch, 1), dtype=torch.float32, device=dev)
        self.recent = self.counts = self.eot_index = None
        if params.repetition_penalty != 1.0:  # counts of the last repetition_window tokens of prompt + generation
            self.recent = torch.zeros((batch, vocab_size), dtype=torch.float32, device=dev)
            tail = seq[:, max(0, start - params.repetition_window):start]
            self.recent.scatter_add_(1, tail, torch.ones(tail.shape, dtype=torch.float32, device=dev))
        if params.frequency_penalty or params.presence_penalty:
            self.counts = torch.zeros((batch, vocab_size), dtype=torch.float32, device=dev)
        if eot is not None and params.min_new_tokens > 0:
            self.eot_index = torch.tensor([eot], device=dev)

    def draw(self, logits: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(the token of each row (B,), its log-probability under the model's own logits, before
        temperature and penalties) for step t (0 = the first new token)."""
        p = self.params
        x = logits
        if self.recent is not None:
            x = apply_repetition_penalty(x, self.recent > 0, p.repetition_penalty)
        if self.counts is not None:
            x = apply_frequency_presence(x, self.counts, p.frequency_penalty, p.presence_penalty)
        if self.eot_index is not None and t < p.min_new_tokens:
            x = x.index_fill(1, self.eot_index, float("-inf"))
        probs = None
        if p.temperature == 0:
            nxt = x.argmax(-1)
        else:
            if p.temperature != 1.0:
                x = x / p.temperature
            if p.top_k is not None or p.top_p is not None:
                x = filter_logits(x, p.top_k, p.top_p)
            probs = torch.softmax(x, dim=-1)
            nxt = sample_from_probs(probs, self.generator)
        col = nxt.unsqueeze(1)
        if probs is not None and x is logits:  # plain sampling: the model's own distribution is at hand
            return nxt, probs.gather(1, col).squeeze(1).log()
        return nxt, torch.log_softmax(logits, dim=-1).gather(1, col).squeeze(1)

    def observe(self, seq: torch.Tensor, end: int) -> None:
        """Count the token just written at seq[:, end]; the one leaving the repetition window is forgotten."""
        col = seq[:, end:end + 1]
        if self.recent is not None:
            self.recent.scatter_add_(1, col, self.ones)
            w = self.params.repetition_window
            if end - w >= 0:
                self.recent.scatter_add_(1, seq[:, end - w:end - w + 1], -self.ones)
        if self.counts is not None:
            self.counts.scatter_add_(1, col, self.ones)
