"""Continuous batching: many generations decode together, joining and leaving between steps.

    batcher = Batcher(model, tokenizer, max_rows=16)
    gens = batcher.generate(model, tokenizer, prompt, params, on_token=...)   # from any thread
    ans = answer(model, tokenizer, prompt, settings, generate=batcher.generate)

`generate` has engine.generate's signature and results, so the answer pipeline runs on top of
it unchanged; `atom serve` calls it from one thread per request. One scheduler thread owns the
model. Each turn it:

1. admits waiting requests while rows are free: the prompt is prefilled alone (a KVCache of
   one row) and copied into the shared RowCache, one row per sample;
2. draws the next token of every row in one pass (sampling.draw over the requests' RowControls:
   each request keeps its own controls, counts and torch.Generator), then lets each request
   record its tokens and check its stop rules (engine.Decoding), and sends streamed pieces to
   its thread;
3. drops the requests that are over (finished, or their caller gone) and compacts the rows;
4. runs one forward over every row left, each at its own length, fed the token it just drew.

A request thus gives the tokens it would give alone with the same seed: its rows see only their
own tokens, every sampling operation works row by row, and its uniform numbers come from its own
generator. A row that reaches the block size restarts its window from its last `window_keep`
tokens, as the one-generation loop does. The per-step work that does not grow with the batch
(the sampling pass, the forward's Python) is what batching shares; the profile of a small model
on a CPU is mostly that.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from atomlib.device import ThreadChoice, autocast
from atomlib.errors import AtomError
from atomlib.generation.engine import Decoding, Generation, matmul_dtype, model_device, prompt_ids, window_keep
from atomlib.generation.sampling import RowControls, SamplingParams, draw
from atomlib.model.kernels import bf16_weights

POLL_SECONDS = 0.05  # how often a waiting caller checks should_stop()


class QueueFull(AtomError):
    """Every row is busy and the waiting line is full: try again later (HTTP 429)."""


@dataclass
class _Job:
    run: Decoding
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # (sample, piece), then None
    on_token: Callable[[int, str], None] | None = None  # called in the scheduler thread instead (inline)
    cancel: threading.Event = field(default_factory=threading.Event)
    result: list[Generation] | None = None
    error: BaseException | None = None
    done: bool = False  # its result (or error) has been sent
    failed: BaseException | None = None  # what its inline callback raised

    def send(self, piece: tuple[int, str]) -> None:
        if self.on_token is None:
            self.events.put(piece)
            return
        try:
            self.on_token(*piece)
        except Exception as e:  # a callback that fails ends its own request, not the batch
            self.on_token, self.failed = None, e
            self.cancel.set()


class Batcher:
    """The scheduler: one model, up to max_rows rows decoding at once, up to max_waiting
    requests waiting for rows (more raise QueueFull).

    inline_callbacks: streamed pieces go to on_token in the scheduler thread, between steps,
    instead of through the caller's thread. That saves each piece a hop between threads (a
    thread wake-up a token a stream, which costs more than the token on a small model), but
    every step then waits for the callbacks: only for quick, thread-safe ones (`atom serve`'s
    hands the piece to its event loop)."""

    def __init__(self, model, tokenizer, max_rows: int = 16, max_waiting: int = 64, precision: str = "auto",
                 inline_callbacks: bool = False):
        self.inline_callbacks = inline_callbacks
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_rows, self.max_waiting = max_rows, max_waiting
        self.device = model_device(model)
        self.dtype = matmul_dtype(precision, self.device, model)
        self.weights = {} if self.dtype == torch.bfloat16 else None  # bf16 copies, made once: weights never change here
        self.cache = model.new_row_cache(max_rows)
        # one thread or all for the steps, chosen by timing them, as the one-generation loop does
        self.threads = ThreadChoice(self.device, "ATOM_DECODE_THREADS")
        self.block = model.config.block_size
        self.waiting: list[_Job] = []
        self.jobs: list[_Job] = []  # running, in row order
        self.logits: list[torch.Tensor] = []  # what the next draw reads: the step's rows, then new requests'
        self.controls: RowControls | None = None  # the running requests' controls (None: to be made)
        self.finished: dict[str, int] = {}  # finish reason of each request's first sample -> count
        self.lock = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="atom-batcher", daemon=True)
        self.thread.start()

    # --- the callers' side (any thread) ---------------------------------------------------------

    def generate(self, model, tokenizer, prompt: str, params: SamplingParams | None = None,
                 on_token: Callable[[int, str], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[Generation]:
        """engine.generate, decoded in the shared batch. Blocks until done; on_token runs in the
        caller's thread (in the scheduler's with inline_callbacks). A should_stop() that turns
        true (a client gone) frees the rows at the next step. The batch has one precision, the
        batcher's: params.precision is not used."""
        if model is not self.model:
            raise AtomError("this batcher serves another model.")
        params = (params or SamplingParams()).checked()
        if params.num_samples > self.max_rows:
            raise AtomError(f"n={params.num_samples} is more than the {self.max_rows} rows this server decodes at once.")
        job = _Job(Decoding(model, prompt_ids(tokenizer, prompt), params, tokenizer, streaming=on_token is not None))
        job.run.should_stop = job.cancel.is_set
        if self.inline_callbacks:
            job.on_token, on_token = on_token, None
        self._submit(job)
        try:
            while (item := self._next_event(job, should_stop)) is not None:
                if on_token is not None:
                    on_token(*item)
        finally:
            job.cancel.set()  # a caller that fails (or returns early) gives its rows back
        if job.error is not None:
            raise job.error
        return job.result

    def _submit(self, job: _Job) -> None:
        with self.lock:
            if self.closed:
                raise AtomError("the batcher is closed.")
            if len(self.waiting) >= self.max_waiting:
                raise QueueFull(f"all {self.max_rows} rows are busy and {self.max_waiting} requests wait; "
                                "try again shortly.")
            self.waiting.append(job)
            self.lock.notify()

    @staticmethod
    def _next_event(job: _Job, should_stop):
        while True:
            if should_stop is not None and should_stop():
                job.cancel.set()
            try:
                return job.events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue

    def load(self) -> dict:
        """Requests running and waiting, rows in use, and how finished requests ended."""
        with self.lock:
            return {"running": len(self.jobs), "waiting": len(self.waiting), "rows": self.cache.rows,
                    "max_rows": self.max_rows, "finished": dict(self.finished)}

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify()
        self.thread.join(timeout=10)

    # --- the scheduler thread --------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self.lock:
                if not self.closed and not self.waiting and not self.jobs:
                    self.threads.off()  # idle: torch's own thread count for anyone else
                while not self.closed and not self.waiting and not self.jobs:
                    self.lock.wait()
                if self.closed:
                    break
            try:
                self._turn()
            except Exception as e:  # a failed forward fails the requests in it, never the thread
                for job in self.jobs:
                    self._end(job, e)
                self.jobs, self.cache.lengths, self.logits, self.controls = [], [], [], None
        for job in self.jobs + self.waiting:
            self._end(job, AtomError("the server is shutting down."))

    @torch.inference_mode()
    def _turn(self) -> None:
        self._admit()
        if not self.jobs:
            return
        nxt = self._draw()
        live = [job for job in self.jobs if job.run.reason is None]
        if len(live) < len(self.jobs):
            rows = [r for span, job in self._row_spans() if job.run.reason is None for r in span]
            self.cache.keep(rows)
            nxt = nxt[rows]
            self.controls = None
            with self.lock:
                over, self.jobs = [job for job in self.jobs if job.run.reason is not None], live
            for job in over:  # told once their rows are free, so load() agrees with what they see
                self._end(job)
        if self.jobs:
            self._step(nxt)

    def _admit(self) -> None:
        while True:
            with self.lock:
                if not self.waiting or self.cache.rows + self.waiting[0].run.rows > self.max_rows:
                    return
                job = self.waiting.pop(0)
            if job.cancel.is_set() or job.run.reason is not None:  # its caller left while it waited, or 0 tokens
                self._end(job)
                continue
            try:
                self._prefill(job)
            except Exception as e:  # this request's prompt failed: only it is told
                self._end(job, e)
                continue
            self.controls = None
            with self.lock:
                self.jobs.append(job)

    def _forward(self, ids: torch.Tensor, cache) -> torch.Tensor:
        """The last position's logits (B, V) in float32, in the batcher's precision."""
        with autocast(ids.device, self.dtype), bf16_weights(self.weights):
            return self.model(ids, cache=cache)[0][:, -1].float()

    def _prefill(self, job: _Job) -> None:
        run = job.run
        ctx = run.prompt_ids()[:, -self.block:]
        one = self.model.new_cache(ctx.size(0), max_len=ctx.size(1))
        logits = self._forward(ctx, one)
        copies = run.rows // ctx.size(0)
        self.cache.add(one, copies)
        self.logits.append(logits.expand(run.rows, -1) if copies > 1 else logits)

    def _draw(self) -> torch.Tensor:
        """One draw over every row; each request records its tokens, streams its pieces and checks
        whether it is over. Returns the tokens drawn (rows,)."""
        if self.controls is None:
            self.controls = RowControls([job.run.sampler for job in self.jobs])
        logits = torch.cat(self.logits) if len(self.logits) > 1 else self.logits[0]
        self.logits = []  # read: the step after this draw gives the next
        nxt, logprobs = draw(logits, self.controls, [job.run.n for job in self.jobs])
        ids = nxt.tolist()
        for rows, job in self._row_spans():
            run, span = job.run, slice(rows.start, rows.stop)
            for piece in run.record(nxt[span], logprobs[span], ids[span]):
                job.send(piece)
            run.settle()
        return nxt

    def _end(self, job: _Job, error: BaseException | None = None) -> None:
        """Send a finished (or failed) request its last pieces and its result, once."""
        run = job.run
        if job.done:
            return
        job.done = True
        if error is None and job.failed is None:
            if run.reason is None:
                run.reason = "aborted"
            for piece in run.close():
                job.send(piece)
            job.result = run.generations()
            why = job.result[0].finish_reason if job.result else run.reason
        error = error or job.failed  # (a callback may fail on the last pieces too)
        if error is not None:
            job.error, why = error, "error"
        with self.lock:
            self.finished[why] = self.finished.get(why, 0) + 1
        job.events.put(None)

    def _row_spans(self):
        """(range of rows, job) for every running job, in row order."""
        first = 0
        for job in self.jobs:
            yield range(first, first + job.run.rows), job
            first += job.run.rows

    def _step(self, nxt: torch.Tensor) -> None:
        """One forward over every row: each feeds the token it just drew (after a slide, if its
        window is full)."""
        full = [(rows, job) for rows, job in self._row_spans() if self.cache.lengths[rows.start] >= self.block]
        if full:
            self._slide(full)
        self.threads.on()
        t0 = time.perf_counter()
        self.logits = [self._forward(nxt[:, None], self.cache)]
        self.threads.record(time.perf_counter() - t0)

    def _slide(self, full: list[tuple[range, _Job]]) -> None:
        """These rows' windows are full: each restarts from its last `keep` tokens (the last one is
        fed by the step, as after any prefill). Rows that keep as many tokens are re-encoded in one
        forward (requests that started together slide together)."""
        groups: dict[int, list[tuple[range, _Job]]] = {}
        for rows, job in full:
            groups.setdefault(window_keep(job.run.params, self.block), []).append((rows, job))
        for keep, group in groups.items():
            tails = torch.cat([job.run.seq[:, job.run.end - keep:job.run.end - 1] for _, job in group])
            one = self.model.new_cache(tails.size(0), max_len=max(1, keep - 1))
            if tails.size(1):
                self._forward(tails, one)
            self.cache.set_rows([r for rows, _ in group for r in rows], one)
