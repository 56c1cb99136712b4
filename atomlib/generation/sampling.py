"""The sampling controls: what decides which token a step picks, given the model's logits.

`SamplingParams` holds every control; each generation has a `TokenSampler` (its counts and its
own random generator). A step's logits go through `draw`, which applies the controls in this
order (each function below is public and tested):

1. repetition penalty (CTRL: positive logits divided, negative multiplied, for tokens seen in
   the last `repetition_window` tokens of prompt + generation);
2. frequency and presence penalties (OpenAI: over the generated tokens);
3. the end-of-text ban before `min_new_tokens`;
4. temperature (0 = greedy), top-k, top-p;
5. the draw, with the run's own torch.Generator (never the global RNG), so a seed reproduces
   a batch exactly.

Everything acts on (B, V) float tensors on the model's device, so a step never waits for the host.
One draw serves every row of a batch, even when its rows belong to generations with different
settings (`RowControls`: the batch scheduler, batcher.py): each control is then a column of
per-row values, and each row comes out as it would alone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from atomlib.errors import AtomError

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
TOP_P_FIRST = 256  # tokens top_p_filter looks among first (see there)


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
#
# Each control is a number for every row or a (B, 1) tensor, one value per row: a batch may hold
# several generations with their own settings (continuous batching, batcher.py). Every operation
# is row by row, so a row gets the same result whatever rows it is batched with.


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019): for tokens where `seen` (B, V) is true, divide a
    positive logit by `penalty` and multiply a negative one, so the token gets less likely."""
    if not isinstance(penalty, torch.Tensor) and penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def apply_frequency_presence(logits: torch.Tensor, counts: torch.Tensor, frequency, presence) -> torch.Tensor:
    """OpenAI's penalties: logit - frequency * count - presence * (count > 0), counts (B, V)."""
    if isinstance(frequency, torch.Tensor) or frequency:
        logits = logits - frequency * counts
    if isinstance(presence, torch.Tensor) or presence:
        logits = logits - presence * (counts > 0).to(logits.dtype)
    return logits


def top_k_filter(logits: torch.Tensor, k, k_max: int | None = None) -> torch.Tensor:
    """Logits below the k-th largest of each row set to -inf (ties with the k-th are kept). k per
    row (B, 1) may be 0 (that row unfiltered); k_max, its largest value, saves a look at it."""
    V = logits.size(-1)
    if k is None or (not isinstance(k, torch.Tensor) and k >= V):
        return logits
    if not isinstance(k, torch.Tensor):
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    else:
        top = torch.topk(logits, min(V, k_max or int(k.max())), dim=-1).values
        kth = top.gather(-1, (k.clamp(max=top.size(-1)) - 1).clamp(min=0)).masked_fill(k <= 0, float("-inf"))
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2019): keep the smallest set of most likely tokens
    whose probabilities sum to at least p (always at least one token); the rest get -inf.
    p per row (B, 1) may be inf (that row unfiltered).

    The nucleus is looked for among the TOP_P_FIRST most likely tokens, then four times as many,
    up to the whole vocabulary, until it lies within them in every row: a full sort of each row
    costs far more than a top-k (a few ms a step for GPT-2's 50,257 tokens on a CPU)."""
    if p is None or (not isinstance(p, torch.Tensor) and p >= 1.0):
        return logits
    probs = torch.softmax(logits, dim=-1)
    V, k = logits.size(-1), min(logits.size(-1), TOP_P_FIRST)
    while True:
        top, order = torch.topk(probs, k, dim=-1)  # most likely first
        mass = torch.cumsum(top, dim=-1)
        if k == V or bool(((mass[:, -1:] >= p) | (p > 1)).all()):  # no row's nucleus reaches past the top k
            break
        k = min(V, 4 * k)
    drop_top = mass - top >= p  # the mass of the strictly more likely tokens already reaches p
    drop_top[..., 0] = False
    drop = torch.ones_like(logits, dtype=torch.bool).scatter(-1, order, drop_top)  # and everything past the top k
    if isinstance(p, torch.Tensor):
        drop &= p <= 1
    return logits.masked_fill(drop, float("-inf"))


def filter_logits(logits: torch.Tensor, top_k=None, top_p=None, k_max: int | None = None) -> torch.Tensor:
    """top-k, then top-p (the order Hugging Face uses)."""
    return top_p_filter(top_k_filter(logits, top_k, k_max), top_p)


def next_token_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution one step samples from, for a (B, V) row of raw logits with no history
    (penalties need a history and are left out). Greedy gives a one-hot row."""
    if params.temperature == 0:
        return F.one_hot(logits.argmax(-1), logits.size(-1)).to(logits.dtype)
    return torch.softmax(filter_logits(logits / params.temperature, params.top_k, params.top_p), dim=-1)


def sample_from_probs(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One index per row, drawn from probs (B, V) (need not sum to 1) by inverting the CDF with
    one uniform number per row, uniform (B, 1) in [0, 1): an exact draw, with no host sync and
    less work than torch.multinomial on a large vocabulary."""
    cdf = probs.cumsum(-1)
    return torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True).clamp_(max=probs.size(-1) - 1).squeeze(1)


# --- one run's sampler, and the draw over a batch's rows ---------------------------------------


class TokenSampler:
    """The controls of one generation, applied step after step: the penalties' token counts, the
    end-of-text ban and the run's own random generator. What a run needs is decided once here, so
    a step does no avoidable work (no penalty tensors when the penalties are off).

    seq (B, T) holds the prompt in seq[:, :start] and receives each drawn token after it; the
    loop writes the token at seq[:, end] and then calls observe(seq, end)."""

    def __init__(self, params: SamplingParams, seq: torch.Tensor, start: int, vocab_size: int, eot: int | None):
        self.params, self.rows, self.eot = params, seq.size(0), eot
        dev = seq.device
        self.generator = torch.Generator(device=dev)
        if params.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(params.seed)
        self.ones = torch.ones((self.rows, 1), dtype=torch.float32, device=dev)
        self.recent = self.counts = None
        if params.repetition_penalty != 1.0:  # counts of the last repetition_window tokens of prompt + generation
            self.recent = torch.zeros((self.rows, vocab_size), dtype=torch.float32, device=dev)
            tail = seq[:, max(0, start - params.repetition_window):start]
            self.recent.scatter_add_(1, tail, torch.ones(tail.shape, dtype=torch.float32, device=dev))
        if params.frequency_penalty or params.presence_penalty:
            self.counts = torch.zeros((self.rows, vocab_size), dtype=torch.float32, device=dev)
        self.controls: RowControls | None = None  # its rows' controls, made at the first draw

    def draw(self, logits: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(the token of each row (B,), its log-probability under the model's own logits, before
        temperature and penalties) for step t (0 = the first new token)."""
        self.controls = self.controls or RowControls([self])
        return draw(logits, self.controls, [t])

    def bans_end_of_text(self, t: int) -> bool:
        return self.eot is not None and t < self.params.min_new_tokens

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


class RowControls:
    """The controls of several generations' rows (their samplers, in row order), so one draw
    serves a whole batch: one pass of each operation instead of one per generation. A control on
    which the generations differ is an (R, 1) column of per-row values, one they share is that
    number, and one no row uses is None and costs nothing; a row without a control the others use
    gets the value that leaves its logits exactly as they are. Made when the batch's set of
    generations changes, not every step."""

    def __init__(self, samplers: list[TokenSampler]):
        self.samplers = samplers
        self.device = samplers[0].ones.device
        params = [(s.params, s.rows) for s in samplers]
        temps = [p.temperature for p, _ in params]
        self.greedy = self._column([t == 0 for t in temps], False, torch.bool)
        self.sampling = any(t > 0 for t in temps)
        self.temperature = self._column([t if t > 0 else 1.0 for t in temps], 1.0)
        self.top_k = self._column([p.top_k or 0 for p, _ in params], 0, torch.long)
        self.k_max = max(p.top_k or 0 for p, _ in params)
        self.top_p = self._column([p.top_p if p.top_p is not None and p.top_p < 1 else math.inf for p, _ in params],
                                  math.inf)  # inf: no nucleus filter for that row
        self.repetition = self._column([p.repetition_penalty for p, _ in params], 1.0)
        self.frequency = self._column([p.frequency_penalty for p, _ in params], 0.0)
        self.presence = self._column([p.presence_penalty for p, _ in params], 0.0)

    def _column(self, values: list, off, dtype=torch.float32):
        """One value per row (each sampler's, repeated over its rows); None if every one is `off`,
        the value itself if every sampler has the same (one generation: no columns at all)."""
        if all(v == off for v in values):
            return None
        if dtype != torch.bool and all(v == values[0] for v in values):
            return values[0]
        rows = [v for v, s in zip(values, self.samplers) for _ in range(s.rows)]
        return torch.tensor(rows, dtype=dtype, device=self.device)[:, None]

    def state(self, name: str) -> torch.Tensor:
        """The samplers' counts ("recent" or "counts") stacked (R, V); zeros for a sampler without them."""
        parts = [getattr(s, name) for s in self.samplers]
        if len(parts) == 1:
            return parts[0]
        like = next(p for p in parts if p is not None)
        return torch.cat([p if p is not None else like.new_zeros((s.rows, like.size(1)))
                          for p, s in zip(parts, self.samplers)])

    def uniforms(self) -> torch.Tensor:
        """One uniform number per row, each from its own sampler's generator, so a generation draws
        the same numbers alone or batched (a greedy one draws none: zeros stand in)."""
        parts = [torch.rand((s.rows, 1), generator=s.generator, device=self.device) if s.params.temperature > 0
                 else torch.zeros((s.rows, 1), device=self.device) for s in self.samplers]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def ban_end_of_text(self, x: torch.Tensor, steps: list[int]) -> torch.Tensor:
        """End-of-text at -inf in the rows of the samplers still before their min_new_tokens."""
        rows, eots, first = [], [], 0
        for s, t in zip(self.samplers, steps):
            if s.bans_end_of_text(t):
                rows += range(first, first + s.rows)
                eots += [s.eot] * s.rows
            first += s.rows
        if not rows:
            return x
        where = (torch.tensor(rows, device=x.device), torch.tensor(eots, device=x.device))
        return x.index_put(where, torch.tensor(float("-inf"), device=x.device))


def draw(logits: torch.Tensor, controls: RowControls, steps: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of every row in the batch: (token (R,), its log-probability under the model's own
    logits, before temperature and penalties). steps[i] is sampler i's step (0 = its first new
    token). The controls apply in the module docstring's order."""
    c, x = controls, logits
    if c.repetition is not None:
        x = apply_repetition_penalty(x, c.state("recent") > 0, c.repetition)
    if c.frequency is not None or c.presence is not None:
        x = apply_frequency_presence(x, c.state("counts"), c.frequency, c.presence)
    x = c.ban_end_of_text(x, steps)
    nxt = x.argmax(-1) if c.greedy is not None else None
    if c.sampling:
        if c.temperature is not None:
            x = x / c.temperature
        x = filter_logits(x, c.top_k, c.top_p, c.k_max)
        drawn = sample_from_probs(torch.softmax(x, dim=-1), c.uniforms())
        nxt = drawn if nxt is None else torch.where(c.greedy[:, 0], nxt, drawn)
    return nxt, torch.log_softmax(logits, dim=-1).gather(1, nxt[:, None]).squeeze(1)
