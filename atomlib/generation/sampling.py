"""Generation: temperature, top-k, top-p, penalties, stop rules, batches and streaming.

One loop serves the CLI (`atom sample`), the notebooks, the chat, the evaluation and
`GPT.generate` (token ids in, token ids out, as in nanoGPT):

    params = SamplingParams(temperature=0.8, top_p=0.95, stop=("\\n\\n",), seed=1)
    gens = generate(model, tokenizer, "By the river of blood", params)   # -> list[Generation]

How a step works. The prompt is encoded once and prefilled into the model's preallocated
KV cache (once, at batch 1, then copied into every row when `num_samples` > 1, or one row per
sample when each has its own prompt); after that
each step feeds one token per row. When the cache is full (block_size tokens) the window
slides: the cache is reset and the last `window_keep` tokens (half a block by default) are
prefilled again, so generation runs past block_size at the cost of one short prefill every
block_size - window_keep tokens. Sampled ids stay on the device in a preallocated buffer;
the host only looks at them when it has to (stop strings, streaming, end-of-text), and
text is decoded incrementally, one token at a time, only then.

Logits of a step are processed in this order (each function below is public and tested):
repetition penalty (CTRL: positive logits divided, negative multiplied, for tokens seen in
the last `repetition_window` tokens of prompt + generation), frequency and presence
penalties (OpenAI: over the generated tokens), the end-of-text ban before
`min_new_tokens`, temperature (0 = greedy), top-k, top-p; then one token is drawn with the
run's own torch.Generator (never the global RNG), so a seed reproduces a batch exactly.

Speed. Each step is the model's own forward with the cache (model.py), with matrix products
in `precision`: "auto" is what training's dtype auto picks on the device, so bf16 on CPUs that
have it natively (through autocast; the Linear layers then use bf16 weights packed once for
oneDNN, kernels.py; models of 16M parameters and up) and float32 elsewhere. On a CPU the loop
times its own steps on one thread and on all of them and keeps the faster (device.ThreadChoice): a
decode step is dozens of small ops, and whether splitting them pays depends on how busy the
machine is.
`generate_nocache` is the same loop without the cache (the whole window re-encoded every step,
under autocast in the same precision): the reference the tests compare against and the
benchmark's baseline row.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.nn import functional as F

from atomlib.device import ThreadChoice, autocast, pick_dtype
from atomlib.errors import AtomError
from atomlib.model.kernels import bf16_weights

DEFAULT_PROMPT = "\n"  # nanoGPT's sample.py starts from a newline too
FINISH_REASONS = ("length", "stop", "eot", "aborted")
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

        def bad(key, rule):
            raise AtomError(f"sampling parameter {key}={getattr(self, key)!r} is invalid: {rule}.")

        def finite(key):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                bad(key, "use a finite number")

        for key in ("temperature", "repetition_penalty", "frequency_penalty", "presence_penalty"):
            finite(key)
        if self.temperature < 0:
            bad("temperature", "use 0 for greedy decoding or a positive number")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            bad("top_k", "use a positive integer, or None to switch it off")
        if self.top_p is not None and (not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1):
            bad("top_p", "use a number in (0, 1], or None to switch it off")
        if self.repetition_penalty <= 0:
            bad("repetition_penalty", "use a positive number (1.0 switches it off)")
        for key, low in (("repetition_window", 1), ("min_new_tokens", 0), ("max_new_tokens", 0), ("num_samples", 1)):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                bad(key, f"use an integer >= {low}")
        if self.min_new_tokens > self.max_new_tokens:
            bad("min_new_tokens", f"it cannot exceed max_new_tokens={self.max_new_tokens}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            bad("seed", "use an integer or None")
        if self.window_keep is not None and (not isinstance(self.window_keep, int) or self.window_keep < 1):
            bad("window_keep", "use a positive integer no larger than the block size")
        if self.precision not in PRECISIONS:
            bad("precision", "use one of " + ", ".join(PRECISIONS))
        return self


@dataclass
class Generation:
    """One sample. `text` excludes the prompt and any stop string. `tokens` are the ids sampled
    for this sample (the one that completed a stop string included, an end-of-text token not),
    `logprobs` their log-probabilities under the model itself (before temperature and
    penalties). finish_reason: "length" (max_new_tokens), "stop" (a stop string), "eot"
    (end-of-text token) or "aborted" (should_stop)."""

    text: str
    tokens: list[int]
    logprobs: list[float]
    finish_reason: str

    @property
    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else float("-inf")


# --- logits processing (each step; all act on a (B, V) float tensor) ---------------------------


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
    one uniform number per row: an exact draw, with no host sync and far less work than
    torch.multinomial on a 50k vocabulary."""
    cdf = probs.cumsum(-1)
    u = torch.rand((probs.size(0), 1), generator=generator, device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=probs.size(-1) - 1).squeeze(1)


# --- the loop ----------------------------------------------------------------------------------


def model_device(model) -> torch.device:
    return next(model.parameters()).device


# Below this many parameters a decode step is bound by per-call overhead, which bf16's casts and
# oneDNN's calls add to, more than by reading the weights, which bf16 halves; where the two cross
# depends on the CPU (README, Performance, shows where it did here).
BF16_DECODE_MIN_PARAMS = 16_000_000


def matmul_dtype(precision: str, device: torch.device, model=None) -> torch.dtype:
    """The dtype of generation's matrix products. 'auto' is what training's dtype auto picks on
    this device (bf16 only where the hardware does it natively and fast, float32 elsewhere),
    except that on a CPU models under BF16_DECODE_MIN_PARAMS decode in float32 (faster there)."""
    dtype = pick_dtype(device, precision)
    if (precision == "auto" and dtype == torch.bfloat16 and device.type == "cpu" and model is not None
            and sum(p.numel() for p in model.parameters()) < BF16_DECODE_MIN_PARAMS):
        return torch.float32
    return dtype


def _start_ids(tokenizer) -> list[int]:
    """What an empty prompt becomes: GPT-2's <|endoftext|>, else a newline, else token 0."""
    if getattr(tokenizer, "eot_token", None) is not None:
        return [tokenizer.eot_token]
    ids = tokenizer.encode("\n")
    return ids[:1] or [0]


def _weight_store(dtype: torch.dtype) -> dict | None:
    """Where one generation keeps its bf16 weights (kernels.bf16_weights); None in other precisions,
    so the Linear layers skip the check on every call."""
    return {} if dtype == torch.bfloat16 else None


class _CachedWindow:
    """Feeds the model through its KV cache, one token a step; slides the window when the cache
    is full. Matrix products run in `dtype` (bf16 through autocast, which the model's Linear
    layers serve from weights prepared once, see kernels.py)."""

    def __init__(self, model, batch: int, keep: int, dtype: torch.dtype):
        self.model, self.batch, self.keep, self.dtype = model, batch, keep, dtype
        self.block = model.config.block_size
        self.cache = model.new_cache(batch)
        self.weights = _weight_store(dtype)

    def forward(self, ids: torch.Tensor, cache) -> torch.Tensor:
        with autocast(ids.device, self.dtype), bf16_weights(self.weights):
            return self.model(ids, cache=cache)[0][:, -1].float()

    def prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        ctx = prompt[:, -self.block:]  # (1 or batch, n)
        if ctx.size(0) == self.batch:
            return self.forward(ctx, self.cache)
        # one prompt for every row: encode it once, then copy its keys/values into each row
        n = ctx.size(1)
        one = self.model.new_cache(1, max_len=n)
        logits = self.forward(ctx, one)
        self.cache.k[:, :, :, :n].copy_(one.k)
        self.cache.v[:, :, :, :n].copy_(one.v)
        self.cache.pos = n
        return logits.expand(self.batch, -1)

    def step(self, seq: torch.Tensor, end: int) -> torch.Tensor:
        """Logits after seq[:, :end], whose last token is the only one not yet in the cache."""
        if self.cache.pos >= self.block:  # full: slide the window, re-encode its last `keep` tokens
            self.cache.reset()
            return self.forward(seq[:, end - self.keep:end], self.cache)
        return self.forward(seq[:, end - 1:end], self.cache)


class _UncachedWindow:
    """The reference: re-encodes the whole window every step, no cache. window="slide" moves
    the window exactly like _CachedWindow (same outputs); "crop" is nanoGPT's sample.py (the
    last block_size tokens, every step)."""

    def __init__(self, model, batch: int, keep: int, dtype: torch.dtype, window: str = "slide"):
        if window not in ("slide", "crop"):
            raise ValueError(f"window must be 'slide' or 'crop', not {window!r}")
        self.model, self.batch, self.keep, self.window = model, batch, keep, window
        self.block = model.config.block_size
        self.start = 0
        self.dtype = dtype
        self.weights = _weight_store(dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        with autocast(ids.device, self.dtype), bf16_weights(self.weights):  # the cached path's precision
            return self.model(ids)[0][:, -1, :].float()

    def prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        self.start = max(0, prompt.size(1) - self.block)
        return self.forward(prompt[:, self.start:]).expand(self.batch, -1)

    def step(self, seq: torch.Tensor, end: int) -> torch.Tensor:
        if self.window == "crop":
            self.start = max(0, end - self.block)
        elif end - self.start > self.block:
            self.start = end - self.keep
        return self.forward(seq[:, self.start:end])


class _IncrementalDecoder:
    """Turns one sample's token ids into text as they arrive. Char tokens are characters;
    BPE tokens are held back while they end inside a UTF-8 sequence (decoded as U+FFFD)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.chars = tokenizer.chars if getattr(tokenizer, "kind", None) == "char" else None
        self.pending: list[int] = []

    def push(self, tid: int) -> str:
        if self.chars is not None:
            return self.chars[tid] if 0 <= tid < len(self.chars) else ""
        self.pending.append(tid)
        text = self.tokenizer.decode(self.pending)
        if text.endswith("\ufffd") and len(self.pending) < 4:
            return ""
        self.pending = []
        return text

    def flush(self) -> str:
        text = self.tokenizer.decode(self.pending) if self.pending else ""
        self.pending = []
        return text


class _TextTracker:
    """Per-sample text on the host: stop strings, end-of-text, and the streamed pieces.

    A piece is only emitted once it cannot be the start of a stop string, so the pieces of a
    sample always concatenate to its final text."""

    def __init__(self, tokenizer, batch: int, params: SamplingParams, eot: int | None, streaming: bool):
        self.stops = params.stop
        self.min_new = params.min_new_tokens
        self.eot = eot
        self.streaming = streaming
        self.decoders = [_IncrementalDecoder(tokenizer) for _ in range(batch)]
        self.texts = [""] * batch
        self.emitted = [0] * batch
        self.floor = [0] * batch  # a stop string must end after this offset (min_new_tokens)
        self.ntokens: list[int | None] = [None] * batch
        self.reasons: list[str | None] = [None] * batch
        self.active = batch

    def _finish(self, i: int, ntokens: int, reason: str, cut: int | None, events: list):
        text = self.texts[i] + self.decoders[i].flush()
        if cut is not None:
            text = text[:cut]
        self.texts[i] = text
        self.ntokens[i], self.reasons[i] = ntokens, reason
        self.active -= 1
        if self.streaming and len(text) > self.emitted[i]:
            events.append((i, text[self.emitted[i]:]))
            self.emitted[i] = len(text)

    def push(self, ids: list[int], t: int) -> list[tuple[int, str]]:
        """Take the token each sample drew at step t; return the (sample, piece) to stream."""
        events: list[tuple[int, str]] = []
        for i, tid in enumerate(ids):
            if self.reasons[i] is not None:
                continue
            if tid == self.eot:
                self._finish(i, t, "eot", None, events)
                continue
            prev = len(self.texts[i])
            text = self.texts[i] + self.decoders[i].push(tid)
            self.texts[i] = text
            if self.stops:
                if t == self.min_new - 1:
                    self.floor[i] = prev
                if t >= self.min_new - 1:
                    cut = None
                    for s in self.stops:
                        j = text.find(s, max(prev - len(s) + 1, self.floor[i] - len(s) + 1, 0))
                        if j >= 0 and (cut is None or j < cut):
                            cut = j
                    if cut is not None:
                        self._finish(i, t + 1, "stop", cut, events)
                        continue
            if self.streaming:
                safe = len(text) - self._holdback(text)
                if safe > self.emitted[i]:
                    events.append((i, text[self.emitted[i]:safe]))
                    self.emitted[i] = safe
        return events

    def _holdback(self, text: str) -> int:
        """Length of the longest tail of text that could still grow into a stop string."""
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best

    def close(self, n: int, reason: str) -> list[tuple[int, str]]:
        """End every sample still running (after n tokens) with reason; return the last pieces."""
        events: list[tuple[int, str]] = []
        for i in range(len(self.texts)):
            if self.reasons[i] is None:
                self._finish(i, n, reason, None, events)
        return events


@torch.inference_mode()
def _generation_steps(model, prompt: torch.Tensor, params: SamplingParams | None, tokenizer=None,
                      should_stop: Callable[[], bool] | None = None, streaming: bool = False,
                      cached: bool = True, window: str = "slide"):
    """The decode loop, as a generator: yields (sample_index, text_piece) while streaming and returns
    (ids (B, n), logprobs (B, n), tracker or None, finish reason of the unfinished) as StopIteration.value.

    prompt: token ids (1, T0), one prompt for every sample, or (num_samples, T0), one per row.
    The tokenizer is needed only for text: stop strings, streaming, end-of-text."""
    params = (params or SamplingParams()).checked()
    dev = model_device(model)
    block = model.config.block_size
    B, N = params.num_samples, params.max_new_tokens
    keep = min(params.window_keep or max(block // 2, 1), block)
    eot = getattr(tokenizer, "eot_token", None) if params.stop_at_eot else None
    if prompt.size(0) not in (1, B):
        raise AtomError(f"{prompt.size(0)} prompt rows for num_samples={B}; give one prompt or one per sample.")
    T0 = prompt.size(1)

    seq = torch.empty((B, T0 + N), dtype=torch.long, device=dev)  # prompt + every sampled id, on device
    seq[:, :T0] = prompt.to(dev)
    logprobs = torch.empty((B, N), dtype=torch.float32, device=dev)
    if N == 0:
        return seq[:, T0:], logprobs, None, "length"
    gen = torch.Generator(device=dev)
    if params.seed is None:
        gen.seed()
    else:
        gen.manual_seed(params.seed)

    # what this run needs, decided once so the loop does no avoidable work
    greedy = params.temperature == 0
    temperature = params.temperature
    top_k, top_p = params.top_k, params.top_p
    use_rep = params.repetition_penalty != 1.0
    use_freq = bool(params.frequency_penalty or params.presence_penalty)
    V = model.config.vocab_size
    if use_rep or use_freq:
        plus = torch.ones((B, 1), dtype=torch.float32, device=dev)
    if use_rep:  # token counts of the last repetition_window tokens of prompt + generation
        w = params.repetition_window
        recent = torch.zeros((B, V), dtype=torch.float32, device=dev)
        tail = seq[:, max(0, T0 - w):T0]
        recent.scatter_add_(1, tail, torch.ones(tail.shape, dtype=torch.float32, device=dev))
    if use_freq:
        counts = torch.zeros((B, V), dtype=torch.float32, device=dev)
    ban_eot = eot is not None and params.min_new_tokens > 0
    if ban_eot:
        eot_index = torch.tensor([eot], device=dev)

    tracker = None
    if tokenizer is not None and (params.stop or streaming or (eot is not None and dev.type == "cpu")):
        tracker = _TextTracker(tokenizer, B, params, eot, streaming)
    watch_eot = eot is not None and tracker is None  # accelerators: look at a device-side flag now and then
    if watch_eot:
        ended = torch.zeros(B, dtype=torch.bool, device=dev)

    threads = ThreadChoice(dev, "ATOM_DECODE_THREADS", enabled=cached)  # (no cache: real matrix work)
    dtype = matmul_dtype(params.precision, dev, model)
    was_training = model.training
    model.eval()  # no dropout while sampling, even mid-training; the mode is given back below
    win = _CachedWindow(model, B, keep, dtype) if cached else _UncachedWindow(model, B, keep, dtype, window)
    threads.on()
    try:
        logits = win.prefill(seq[:prompt.size(0), :T0])
        n, aborted = 0, False
        if should_stop is not None and should_stop():
            aborted = True
            N = 0
        for t in range(N):
            raw = logits
            x = raw
            if use_rep:
                x = apply_repetition_penalty(x, recent > 0, params.repetition_penalty)
            if use_freq:
                x = apply_frequency_presence(x, counts, params.frequency_penalty, params.presence_penalty)
            if ban_eot and t < params.min_new_tokens:
                x = x.index_fill(1, eot_index, float("-inf"))
            probs = None
            if greedy:
                nxt = x.argmax(-1)
            else:
                if temperature != 1.0:
                    x = x / temperature
                if top_k is not None or top_p is not None:
                    x = filter_logits(x, top_k, top_p)
                probs = torch.softmax(x, dim=-1)
                nxt = sample_from_probs(probs, gen)
            col = nxt.unsqueeze(1)
            end = T0 + t
            seq[:, end] = nxt
            if probs is not None and x is raw:  # plain sampling: the model's own distribution is already at hand
                logprobs[:, t] = probs.gather(1, col).squeeze(1).log()
            else:
                logprobs[:, t] = torch.log_softmax(raw, dim=-1).gather(1, col).squeeze(1)
            if use_rep:
                recent.scatter_add_(1, col, plus)
                if end - w >= 0:
                    recent.scatter_add_(1, seq[:, end - w:end - w + 1], -plus)
            if use_freq:
                counts.scatter_add_(1, col, plus)
            n = t + 1
            if tracker is not None:
                events = tracker.push(nxt.tolist(), t)
                if events:
                    threads.off()
                    yield from events
                    threads.on()
                if tracker.active == 0:
                    break
            elif watch_eot:
                ended |= nxt == eot
                if n % 16 == 0 and bool(ended.all()):
                    break
            if should_stop is not None and should_stop():
                aborted = True
                break
            if n == N:
                break
            t_step = time.perf_counter()
            logits = win.step(seq, end + 1)
            threads.record(time.perf_counter() - t_step)
    finally:
        threads.off()
        model.train(was_training)
    reason = "aborted" if aborted else "length"
    if tracker is not None:
        yield from tracker.close(n, reason)
    return seq[:, T0:T0 + n], logprobs[:, :n], tracker, reason


def _generations(tokenizer, eot: int | None, ids: torch.Tensor, logprobs: torch.Tensor, tracker,
                 reason: str) -> list[Generation]:
    """The decode loop's result as one Generation per sample (one host transfer for the batch)."""
    ids, lps = ids.tolist(), logprobs.tolist()
    if tracker is not None:
        return [Generation(tracker.texts[i], ids[i][:tracker.ntokens[i]], lps[i][:tracker.ntokens[i]],
                           tracker.reasons[i]) for i in range(len(ids))]
    out = []
    for row, lp in zip(ids, lps):
        k, why = len(row), reason
        if eot is not None and eot in row:
            k, why = row.index(eot), "eot"
        out.append(Generation(tokenizer.decode(row[:k]), row[:k], lp[:k], why))
    return out


def _text_steps(model, tokenizer, prompt: str, params: SamplingParams | None, should_stop=None,
                streaming: bool = False, cached: bool = True, window: str = "slide"):
    """The decode loop on a text prompt: yields streamed pieces, returns the list of Generation."""
    params = (params or SamplingParams()).checked()
    ids = (tokenizer.encode(prompt) if prompt else []) or _start_ids(tokenizer)
    result = yield from _generation_steps(model, torch.tensor([ids], dtype=torch.long), params, tokenizer,
                                          should_stop, streaming, cached, window)
    eot = getattr(tokenizer, "eot_token", None) if params.stop_at_eot else None
    return _generations(tokenizer, eot, *result)


def decode_ids(model, prompt: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The new token ids (B, n) after prompt ids (1 or B rows): the decode loop without text."""
    steps = _generation_steps(model, prompt, params)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value[0]


def _drive(steps, on_token):
    while True:
        try:
            i, piece = next(steps)
        except StopIteration as done:
            return done.value
        if on_token is not None:
            on_token(i, piece)


def generate(model, tokenizer, prompt: str, params: SamplingParams | None = None,
             on_token: Callable[[int, str], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> list[Generation]:
    """params.num_samples continuations of prompt, generated as one batch with the KV cache.

    on_token(sample_index, text_piece) is called as text arrives (pieces of a sample
    concatenate to its final text); should_stop() is polled every step and, once true, ends
    every unfinished sample with finish_reason "aborted"."""
    steps = _text_steps(model, tokenizer, prompt, params, should_stop, streaming=on_token is not None)
    return _drive(steps, on_token)


def generate_nocache(model, tokenizer, prompt: str, params: SamplingParams | None = None,
                     on_token=None, should_stop=None, window: str = "crop") -> list[Generation]:
    """generate() without the KV cache: each step re-encodes its whole context window.

    window="crop" (the default) feeds the last block_size tokens every step, like nanoGPT's
    sample.py: the usual no-cache generation, and the benchmark's baseline. window="slide"
    moves the window exactly as generate() does, so a seed gives the same tokens (up to float
    rounding) even past block_size: the tests' reference."""
    steps = _text_steps(model, tokenizer, prompt, params, should_stop,
                        streaming=on_token is not None, cached=False, window=window)
    return _drive(steps, on_token)


def stream(model, tokenizer, prompt: str, params: SamplingParams | None = None,
           should_stop: Callable[[], bool] | None = None) -> Iterator[str]:
    """Text pieces of sample 0 as they are generated (a UI's typing effect). The generator's
    return value (StopIteration.value) is the full list of Generation. Closing it early
    (break) stops the generation."""
    steps = _text_steps(model, tokenizer, prompt, params, should_stop, streaming=True)
    while True:
        try:
            i, piece = next(steps)
        except StopIteration as done:
            return done.value
        if i == 0:
            yield piece


# --- loading and the command line ------------------------------------------------------------


def load_for_sampling(run=None, init_from: str | None = None, device: str = "auto"):
    """(model in eval mode, tokenizer, description) from a run folder (default: the newest under
    outputs/runs/) or from Hugging Face GPT-2 weights (a hub name or a save_pretrained folder)."""
    from atomlib.device import pick_device

    if run is not None and init_from:
        raise AtomError("pass either --run DIR or --init-from NAME, not both.")
    if init_from:
        from atomlib.model.gpt import GPT
        from atomlib.data.tokenizer import GPT2Tokenizer

        model = GPT.from_pretrained(init_from)
        model.to(pick_device(device)).eval()
        return model, GPT2Tokenizer(), f"GPT-2 weights {init_from}"
    from atomlib.model.checkpoint import load_run
    from atomlib.paths import resolve_run

    run = resolve_run(run)
    model, tokenizer, state = load_run(run, device=device)
    return model, tokenizer, f"run {run} (step {state.get('step')})"


def read_prompt(spec: str | None) -> str:
    """--prompt TEXT, or FILE:path for a file's contents; None gives the default prompt."""
    if spec is None:
        return DEFAULT_PROMPT
    if spec.startswith("FILE:"):
        path = Path(spec[5:]).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise AtomError(f"cannot read the prompt file {path} ({type(e).__name__}); "
                            "check the path after FILE:.") from None
    return spec


def sample_command(args) -> None:
    """`atom sample`: stream sample 1 to stdout when there is one, else print each in turn."""
    model, tokenizer, source = load_for_sampling(getattr(args, "run", None), getattr(args, "init_from", None),
                                                 getattr(args, "device", "auto"))
    prompt = read_prompt(args.prompt)
    params = SamplingParams(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens,
        min_new_tokens=getattr(args, "min_new_tokens", 0) or 0, stop=tuple(getattr(args, "stop", None) or ()),
        seed=args.seed, num_samples=args.num_samples, precision=getattr(args, "precision", "auto")).checked()
    print(f"sampling from {source}", file=sys.stderr)
    out = sys.stdout
    if params.num_samples == 1:
        out.write(prompt)
        out.flush()

        def show(_i, piece):
            out.write(piece)
            out.flush()

        generate(model, tokenizer, prompt, params, on_token=show)
        out.write("\n")
    else:
        for g in generate(model, tokenizer, prompt, params):
            out.write(prompt + g.text + "\n---------------\n")
    out.flush()
