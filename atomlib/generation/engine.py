"""The decode loop: prefill, one token a step, the sliding window, stop rules and streaming.

One loop serves the CLI (`atom sample`), the notebooks, the chat, the evaluation, the benchmark
and `GPT.generate` (token ids in, token ids out, as in nanoGPT):

    params = SamplingParams(temperature=0.8, top_p=0.95, stop=("\\n\\n",), seed=1)
    gens = generate(model, tokenizer, "By the river of blood", params)   # -> list[Generation]

The model is a parameter: anything with GPT's interface (`config`, `new_cache`, a forward that
takes the cache) decodes here, and this module never imports the model's.

How a step works. The prompt is encoded once and prefilled into the model's preallocated KV
cache (once, at batch 1, then copied into every row when `num_samples` > 1, or one row per
sample when each has its own prompt); after that each step feeds one token per row. When the
cache is full (block_size tokens) the window slides: the cache is reset and the last
`window_keep` tokens (half a block by default) are prefilled again, so generation runs past
block_size at the cost of one short prefill every block_size - window_keep tokens. The logits
of a step go through the sampling controls (sampling.py). Sampled ids stay on the device in a
preallocated buffer; the host looks at them only when it has to (stop strings, streaming,
end-of-text: textstream.py).

Speed. Each step is the model's own forward with the cache, with matrix products in `precision`:
"auto" is what training's dtype auto picks on the device, so bf16 on CPUs that have it natively
(through autocast; the Linear layers then use bf16 weights packed once, kernels.py; models of
BF16_DECODE_MIN_PARAMS parameters and up) and float32 elsewhere. On a CPU the loop times its own
steps on one thread and on all of them and keeps the faster (device.ThreadChoice): a decode step
is dozens of small ops, and whether splitting them pays depends on how busy the machine is.
`generate_nocache` is the same loop without the cache (the whole window re-encoded every step,
in the same precision): the reference the tests compare against and the benchmark's baseline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from atomlib.device import ThreadChoice, autocast, pick_dtype
from atomlib.errors import AtomError
from atomlib.generation.sampling import SamplingParams, TokenSampler
from atomlib.generation.textstream import TextTracker
from atomlib.model.kernels import bf16_weights

FINISH_REASONS = ("length", "stop", "eot", "aborted")

# Below this many parameters a decode step is bound by per-call overhead, which bf16's casts and
# oneDNN's calls add to, more than by reading the weights, which bf16 halves; where the two cross
# depends on the CPU (the README's Performance section shows where it did on one machine).
BF16_DECODE_MIN_PARAMS = 16_000_000


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


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def matmul_dtype(precision: str, device: torch.device, model=None) -> torch.dtype:
    """The dtype of generation's matrix products. 'auto' is what training's dtype auto picks on
    this device (bf16 only where the hardware does it natively and fast, float32 elsewhere),
    except that on a CPU models under BF16_DECODE_MIN_PARAMS decode in float32 (faster there)."""
    dtype = pick_dtype(device, precision)
    if (precision == "auto" and dtype == torch.bfloat16 and device.type == "cpu" and model is not None
            and sum(p.numel() for p in model.parameters()) < BF16_DECODE_MIN_PARAMS):
        return torch.float32
    return dtype


# --- the window: what the model sees each step -----------------------------------------------------


class _Window:
    """Runs the model's forward in the generation's precision; bf16 weights are prepared once per
    generation (kernels.bf16_weights), and not at all in other precisions."""

    def __init__(self, model, batch: int, keep: int, dtype: torch.dtype):
        self.model, self.batch, self.keep, self.dtype = model, batch, keep, dtype
        self.block = model.config.block_size
        self.weights = {} if dtype == torch.bfloat16 else None

    def forward(self, ids: torch.Tensor, cache=None) -> torch.Tensor:
        """The last position's logits (B, V) in float32."""
        with autocast(ids.device, self.dtype), bf16_weights(self.weights):
            return self.model(ids, cache=cache)[0][:, -1].float()


class _CachedWindow(_Window):
    """Feeds the model through its KV cache, one token a step; slides the window when the cache is full."""

    def __init__(self, model, batch: int, keep: int, dtype: torch.dtype):
        super().__init__(model, batch, keep, dtype)
        self.cache = model.new_cache(batch)

    def prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        ctx = prompt[:, -self.block:]  # (1 or batch, n)
        if ctx.size(0) == self.batch:
            return self.forward(ctx, self.cache)
        one = self.model.new_cache(1, max_len=ctx.size(1))  # one prompt for every row: encode it once
        logits = self.forward(ctx, one)
        self.cache.fill_rows(one)
        return logits.expand(self.batch, -1)

    def step(self, seq: torch.Tensor, end: int) -> torch.Tensor:
        """Logits after seq[:, :end], whose last token is the only one not yet in the cache."""
        if self.cache.pos >= self.block:  # full: slide the window, re-encode its last `keep` tokens
            self.cache.reset()
            return self.forward(seq[:, end - self.keep:end], self.cache)
        return self.forward(seq[:, end - 1:end], self.cache)


class _UncachedWindow(_Window):
    """The reference: re-encodes the whole window every step, no cache. window="slide" moves the
    window exactly like _CachedWindow (same outputs); "crop" is nanoGPT's sample.py (the last
    block_size tokens, every step)."""

    def __init__(self, model, batch: int, keep: int, dtype: torch.dtype, window: str = "slide"):
        if window not in ("slide", "crop"):
            raise ValueError(f"window must be 'slide' or 'crop', not {window!r}")
        super().__init__(model, batch, keep, dtype)
        self.window, self.start = window, 0

    def prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        self.start = max(0, prompt.size(1) - self.block)
        return self.forward(prompt[:, self.start:]).expand(self.batch, -1)

    def step(self, seq: torch.Tensor, end: int) -> torch.Tensor:
        if self.window == "crop":
            self.start = max(0, end - self.block)
        elif end - self.start > self.block:
            self.start = end - self.keep
        return self.forward(seq[:, self.start:end])


# --- the loop ---------------------------------------------------------------------------------------


class Decoding:
    """One generation between steps: its buffers on the device, its sampler and the rules that end
    it. Whoever runs the model hands it each step's logits (take), then asks whether it is over
    (settle): this loop below, one generation at a time, and the batch scheduler (batcher.py),
    many at once, so a request decodes the same way in both.

    prompt: token ids (1, T0), one prompt for every sample, or (num_samples, T0), one per row.
    The tokenizer is needed only for text: stop strings, streaming, end-of-text."""

    def __init__(self, model, prompt: torch.Tensor, params: SamplingParams, tokenizer=None,
                 should_stop: Callable[[], bool] | None = None, streaming: bool = False):
        dev = model_device(model)
        B, N = params.num_samples, params.max_new_tokens
        if prompt.size(0) not in (1, B):
            raise AtomError(f"{prompt.size(0)} prompt rows for num_samples={B}; give one prompt or one per sample.")
        self.params, self.tokenizer, self.should_stop = params, tokenizer, should_stop
        self.start, self.prompt_rows, self.max_new = prompt.size(1), prompt.size(0), N
        self.seq = torch.empty((B, self.start + N), dtype=torch.long, device=dev)  # the prompt, then every id
        self.seq[:, :self.start] = prompt.to(dev)
        self.logprobs = torch.empty((B, N), dtype=torch.float32, device=dev)
        self.eot = getattr(tokenizer, "eot_token", None) if params.stop_at_eot else None
        self.tracker = None  # text on the host, when stop strings, streaming or end-of-text need it
        if tokenizer is not None and (params.stop or streaming or (self.eot is not None and dev.type == "cpu")):
            self.tracker = TextTracker(tokenizer, B, params.stop, params.min_new_tokens, self.eot, streaming)
        # without a tracker, end-of-text is watched on the device: a flag read now and then, not every step
        self.ended = torch.zeros(B, dtype=torch.bool, device=dev) if self.eot is not None and not self.tracker else None
        self.sampler = TokenSampler(params, self.seq, self.start, model.config.vocab_size, self.eot) if N else None
        self.n = 0  # tokens drawn so far
        self.reason: str | None = None if N else "length"  # set once the generation is over

    @property
    def rows(self) -> int:
        return self.seq.size(0)

    @property
    def end(self) -> int:
        """Tokens in seq: the prompt and those drawn; the last one is the next step's input."""
        return self.start + self.n

    def prompt_ids(self) -> torch.Tensor:
        return self.seq[:self.prompt_rows, :self.start]

    def take(self, logits: torch.Tensor) -> list[tuple[int, str]]:
        """Draw the next token of every row from logits (rows, V): record it, check the stop rules;
        returns the (sample, text piece) pairs to stream."""
        return self.record(*self.sampler.draw(logits, self.n))

    def record(self, nxt: torch.Tensor, logprobs: torch.Tensor, ids: list[int] | None = None) -> list[tuple[int, str]]:
        """Take the tokens drawn for every row (rows,) and their log-probabilities (here, or by one
        draw over a whole batch: batcher.py, which passes them as a list too, ids, read once for
        the batch); check the stop rules. Returns the (sample, text piece) pairs to stream."""
        t, end = self.n, self.end
        self.seq[:, end] = nxt
        self.logprobs[:, t] = logprobs
        self.sampler.observe(self.seq, end)
        self.n = t + 1
        if self.tracker is not None:
            events = self.tracker.push(nxt.tolist() if ids is None else ids, t)
            if self.tracker.active == 0:
                self.reason = "length"  # (every sample has its own reason already)
            return events
        if self.ended is not None:
            self.ended |= nxt == self.eot
            if self.n % 16 == 0 and bool(self.ended.all()):
                self.reason = "length"
        return []

    def settle(self) -> bool:
        """After a step's pieces are out: end on should_stop() or at max_new_tokens. True once over."""
        if self.reason is None and self.should_stop is not None and self.should_stop():
            self.reason = "aborted"
        if self.reason is None and self.n >= self.max_new:
            self.reason = "length"
        return self.reason is not None

    def close(self) -> list[tuple[int, str]]:
        """End the samples still running with the generation's reason; the last pieces to stream."""
        return self.tracker.close(self.n, self.reason) if self.tracker is not None else []

    def generations(self) -> list[Generation]:
        """One Generation per sample (one host transfer for the batch)."""
        ids, lps = self.seq[:, self.start:self.end].tolist(), self.logprobs[:, :self.n].tolist()
        tr = self.tracker
        if tr is not None:
            return [Generation(tr.texts[i], ids[i][:tr.ntokens[i]], lps[i][:tr.ntokens[i]], tr.reasons[i])
                    for i in range(len(ids))]
        out = []
        for row, lp in zip(ids, lps):
            k, why = len(row), self.reason
            if self.eot is not None and self.eot in row:
                k, why = row.index(self.eot), "eot"
            out.append(Generation(self.tokenizer.decode(row[:k]), row[:k], lp[:k], why))
        return out


def _decode(win, run: Decoding, threads: ThreadChoice):
    """The steps: draw, record, check the stop rules, feed the token back. Yields (sample, text
    piece) while streaming."""
    logits = win.prefill(run.prompt_ids())
    if run.should_stop is not None and run.should_stop():
        run.reason = "aborted"
    while not run.reason:
        events = run.take(logits)
        if events:
            threads.off()  # the consumer of the stream never runs with the decode's thread count
            yield from events
            threads.on()
        if run.settle():
            return
        t_step = time.perf_counter()
        logits = win.step(run.seq, run.end)
        threads.record(time.perf_counter() - t_step)


@torch.inference_mode()
def _generation_steps(model, prompt: torch.Tensor, params: SamplingParams | None, tokenizer=None,
                      should_stop: Callable[[], bool] | None = None, streaming: bool = False,
                      cached: bool = True, window: str = "slide"):
    """The decode loop, as a generator: yields (sample_index, text_piece) while streaming and returns
    the finished Decoding as StopIteration.value."""
    params = (params or SamplingParams()).checked()
    run = Decoding(model, prompt, params, tokenizer, should_stop, streaming)
    if run.reason:  # max_new_tokens == 0
        return run
    dev, block, B = run.seq.device, model.config.block_size, params.num_samples
    keep = window_keep(params, block)
    dtype = matmul_dtype(params.precision, dev, model)
    threads = ThreadChoice(dev, "ATOM_DECODE_THREADS", enabled=cached)  # (no cache: real matrix work)
    was_training = model.training
    model.eval()  # no dropout while sampling, even mid-training; the mode is given back below
    win = _CachedWindow(model, B, keep, dtype) if cached else _UncachedWindow(model, B, keep, dtype, window)
    threads.on()
    try:
        yield from _decode(win, run, threads)
    finally:
        threads.off()
        model.train(was_training)
    yield from run.close()
    return run


def window_keep(params: SamplingParams, block: int) -> int:
    """Tokens kept when the window slides past the block size (half a block by default)."""
    return min(params.window_keep or max(block // 2, 1), block)


# --- the calls -----------------------------------------------------------------------------------


def prompt_ids(tokenizer, prompt: str) -> torch.Tensor:
    """A text prompt as ids (1, T0); an empty one is GPT-2's <|endoftext|>, else a newline, else token 0."""
    ids = tokenizer.encode(prompt) if prompt else []
    if not ids:
        ids = [tokenizer.eot_token] if getattr(tokenizer, "eot_token", None) is not None else tokenizer.encode("\n")[:1]
    return torch.tensor([ids or [0]], dtype=torch.long)


def _text_steps(model, tokenizer, prompt: str, params: SamplingParams | None, should_stop=None,
                streaming: bool = False, cached: bool = True, window: str = "slide"):
    """The decode loop on a text prompt: yields streamed pieces, returns the list of Generation."""
    run = yield from _generation_steps(model, prompt_ids(tokenizer, prompt), params, tokenizer,
                                       should_stop, streaming, cached, window)
    return run.generations()


def _drive(steps, on_token=None):
    """Run a step generator to its end, passing each (sample, piece) to on_token; return its value."""
    while True:
        try:
            i, piece = next(steps)
        except StopIteration as done:
            return done.value
        if on_token is not None:
            on_token(i, piece)


def decode_ids(model, prompt: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The new token ids (B, n) after prompt ids (1 or B rows): the decode loop without text."""
    run = _drive(_generation_steps(model, prompt, params))
    return run.seq[:, run.start:run.end]


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
