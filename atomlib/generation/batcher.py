"""Continuous batching: many generations decode together, joining and leaving between steps.

    batcher = Batcher(model, tokenizer, max_rows=16)
    gens = batcher.generate(model, tokenizer, prompt, params, on_token=...)   # from any thread
    ans = answer(model, tokenizer, prompt, settings, decode=batcher.generate)

`generate` has engine.generate's signature and results, so the answer pipeline runs on top of
it unchanged; `atom serve` calls it from one thread per request. One scheduler thread owns the
model. Each turn it:

1. draws the next token of every running row in one pass (sampling.draw over the requests'
   RowControls: each request keeps its own controls, counts and torch.Generator), lets each
   request record its tokens and check its stop rules (engine.Decoding), and sends the
   streamed pieces on;
2. drops the requests that are over (finished, or their caller gone) and compacts the rows;
3. admits waiting requests while rows are free: their prompts, all but the last token, are
   encoded together in one forward (right-padded; a row never attends to what follows it) and
   copied into the shared RowCache, one row per sample;
4. runs one forward over every row, each at its own length, fed the token it just drew or, for
   a new request, its prompt's last token: every row's logits for the next draw.

A request thus gives the tokens it would give alone with the same seed: its rows see only their
own tokens, every sampling operation works row by row, and its uniform numbers come from its own
generator. A row that reaches the block size restarts its window from its last `window_keep`
tokens, as the one-generation loop does (rows that slide at the same step are re-encoded
together). What batching shares is the per-step work that does not grow with the rows: the
forward's Python and its reads of the weights, the sampling pass; on a small model on a CPU that
is most of a step.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch

from atomlib.device import ThreadChoice, autocast
from atomlib.errors import AtomError
from atomlib.generation.engine import Decoding, Generation, matmul_dtype, model_device, prompt_ids, window_keep
from atomlib.generation.sampling import RowControls, SamplingParams, draw
from atomlib.model.kernels import bf16_weights

if TYPE_CHECKING:
    from atomlib.model.cache import KVCache

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
    hands the piece to its event loop).

    spare_cores: cores the decode steps leave to others (`atom serve`'s event loop and clients).
    A second decode thread spins between the forward's many small operations and takes its core
    whole, which the server's HTTP side then lacks."""

    def __init__(self, model, tokenizer, max_rows: int = 16, max_waiting: int = 64, precision: str = "auto",
                 inline_callbacks: bool = False, spare_cores: int = 0):
        self.inline_callbacks = inline_callbacks
        self.max_threads = max(1, torch.get_num_threads() - spare_cores) if spare_cores else None
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_rows, self.max_waiting = max_rows, max_waiting
        self.device = model_device(model)
        self.dtype = matmul_dtype(precision, self.device, model)
        self.weights = {} if self.dtype == torch.bfloat16 else None  # bf16 copies, made once: weights never change here
        self.cache = model.new_row_cache(max_rows)
        # one thread or all for the steps, chosen by timing them as the one-generation loop does, and
        # for each batch size apart (1, 2-3, 4-7, 8-15 rows...): what pays for eight rows may not for one
        self.thread_choices: dict[int, ThreadChoice] = {}
        self.threads: ThreadChoice | None = None  # the one in effect
        self.block = model.config.block_size
        self.waiting: list[_Job] = []
        self.jobs: list[_Job] = []  # running, in row order
        self.logits: torch.Tensor | None = None  # the last step's, (rows, V): what the next draw reads
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
                    self._use_threads(None)  # idle: torch's own thread count for anyone else
                while not self.closed and not self.waiting and not self.jobs:
                    self.lock.wait()
                if self.closed:
                    break
            try:
                self._turn()
            except Exception as e:  # a failed forward fails the requests in it, never the thread
                for job in self.jobs:
                    self._end(job, e)
                self.jobs, self.cache.lengths, self.logits, self.controls = [], [], None, None
        for job in self.jobs + self.waiting:
            self._end(job, AtomError("the server is shutting down."))

    @torch.inference_mode()
    def _turn(self) -> None:
        feed = []  # each row's next input: the token it just drew, or a new request's last prompt token
        if self.jobs:
            feed.append(self._retire(self._draw()))
        feed += [self._last_prompt_token(job) for job in self._admit()]
        if self.jobs:
            self._step(torch.cat(feed))

    def _retire(self, nxt: torch.Tensor) -> torch.Tensor:
        """Drop the requests that are over and compact the rows; the drawn tokens of the rows left."""
        live = [job for job in self.jobs if job.run.reason is None]
        if len(live) == len(self.jobs):
            return nxt
        rows = [r for span, job in self._row_spans() if job.run.reason is None for r in span]
        self.cache.keep(rows)
        self.controls = None
        with self.lock:
            over, self.jobs = [job for job in self.jobs if job.run.reason is not None], live
        for job in over:  # told once their rows are free, so load() agrees with what they see
            self._end(job)
        return nxt[rows]

    def _admit(self) -> list[_Job]:
        """Take waiting requests while rows are free. Their prompts but the last token are encoded
        together into new rows; the step feeds each its last token. Returns them."""
        taken, rows = [], self.cache.rows
        with self.lock:
            while self.waiting and rows + self.waiting[0].run.rows <= self.max_rows:
                taken.append(self.waiting.pop(0))
                rows += taken[-1].run.rows
        new = []
        for job in taken:
            if job.cancel.is_set() or job.run.reason is not None:  # its caller left while it waited, or 0 tokens
                self._end(job)
            else:
                new.append(job)
        if not new:
            return []
        heads = [job.run.prompt_ids()[:, -self.block:][:, :-1] for job in new]
        try:
            one = self._encode(heads)
        except Exception as e:  # these prompts failed: only their requests are told
            for job in new:
                self._end(job, e)
            return []
        first = 0
        for job, head in zip(new, heads):
            self.cache.add(one, head.size(1), list(range(first, first + head.size(0))), job.run.rows // head.size(0))
            first += head.size(0)
        self.controls = None
        with self.lock:
            self.jobs += new
        return new

    @staticmethod
    def _last_prompt_token(job: _Job) -> torch.Tensor:
        run = job.run
        return run.prompt_ids()[:, -1].repeat_interleave(run.rows // run.prompt_rows)

    def _forward(self, ids: torch.Tensor, cache) -> torch.Tensor:
        """The last position's logits (B, V) in float32, in the batcher's precision."""
        with autocast(ids.device, self.dtype), bf16_weights(self.weights):
            return self.model(ids, cache=cache)[0][:, -1].float()

    def _encode(self, heads: list[torch.Tensor]) -> KVCache | None:
        """Several rows' tokens (each (rows, T_i)) encoded in one forward, right-padded to the
        longest: a row never attends to the padding after its tokens, and only its own T_i
        positions are copied out. None if there is nothing to encode."""
        T = max(head.size(1) for head in heads)
        if T == 0:
            return None
        ids = torch.zeros((sum(head.size(0) for head in heads), T), dtype=torch.long, device=self.device)
        first = 0
        for head in heads:
            ids[first:first + head.size(0), :head.size(1)] = head
            first += head.size(0)
        one = self.model.new_cache(ids.size(0), max_len=T)
        self._forward(ids, one)
        return one

    def _draw(self) -> torch.Tensor:
        """One draw over every row; each request records its tokens, streams its pieces and checks
        whether it is over. Returns the tokens drawn (rows,)."""
        if self.controls is None:
            self.controls = RowControls([job.run.sampler for job in self.jobs])
        nxt, logprobs = draw(self.logits, self.controls, [job.run.n for job in self.jobs])
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

    def _step(self, feed: torch.Tensor) -> None:
        """One forward over every row, each fed its next input (rows,), after a slide if its window
        is full; the logits are what the next draw reads."""
        full = [(rows, job) for rows, job in self._row_spans() if self.cache.lengths[rows.start] >= self.block]
        if full:
            self._slide(full)
        threads = self._use_threads(1 << (feed.size(0).bit_length() - 1))
        t0 = time.perf_counter()
        self.logits = self._forward(feed[:, None], self.cache)
        threads.record(time.perf_counter() - t0)

    def _use_threads(self, rows: int | None) -> ThreadChoice | None:
        """Put the thread choice for batches of this many rows in effect (None: none)."""
        new = None if rows is None else self.thread_choices.get(rows)
        if self.threads is not None and self.threads is not new:
            self.threads.off()  # (first: a new choice reads torch's own thread count)
        if rows is not None and new is None:
            new = self.thread_choices[rows] = ThreadChoice(self.device, "ATOM_DECODE_THREADS", most=self.max_threads)
        self.threads = new
        if new is not None:
            new.on()
        return new

    def _slide(self, full: list[tuple[range, _Job]]) -> None:
        """These rows' windows are full: each restarts from its last `keep` tokens, re-encoded all
        together; the last one is fed by the step, as after admission."""
        heads = [job.run.seq[:, job.run.end - window_keep(job.run.params, self.block):job.run.end - 1]
                 for _, job in full]
        one, first = self._encode(heads), 0
        for (rows, _), head in zip(full, heads):
            self.cache.set_rows(list(rows), one, list(range(first, first + head.size(0))), head.size(1))
            first += head.size(0)
