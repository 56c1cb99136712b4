"""Continuous batching: requests decoded together give what each gives alone, join and leave
between steps, stream, stop, and free their rows when their caller goes."""

from __future__ import annotations

import threading
import time

import pytest

from atomlib.errors import AtomError
from atomlib.generation.batcher import Batcher, QueueFull
from atomlib.generation.engine import generate
from atomlib.generation.sampling import SamplingParams

PROMPTS = ["The raven", "Night falls over the graves\n", "", "Blood and iron and ash " * 4]


@pytest.fixture(scope="module")
def batcher(loaded):
    model, tokenizer, _ = loaded
    b = Batcher(model, tokenizer, max_rows=8, max_waiting=16)
    yield b
    b.close()


def _params(i: int, **kw) -> SamplingParams:
    base = dict(temperature=0.9, top_k=20 if i % 2 else None, top_p=0.95 if i % 3 else None,
                repetition_penalty=1.1 if i % 2 else 1.0, frequency_penalty=0.2 * (i % 2),
                max_new_tokens=40 + 23 * i, seed=100 + i, precision="float32")
    return SamplingParams(**{**base, **kw})


def _together(batcher, model, tokenizer, jobs, stagger=0.0):
    """Run every (prompt, params) in its own thread at once; their results in order."""
    out = [None] * len(jobs)

    def one(i, prompt, params):
        out[i] = batcher.generate(model, tokenizer, prompt, params)

    threads = [threading.Thread(target=one, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
        time.sleep(stagger)
    for t in threads:
        t.join(60)
    return out


def test_requests_decoded_together_give_the_tokens_each_gives_alone(loaded, batcher):
    """Different prompts, lengths, controls and n, joining at different steps, some running past
    the block size (the window slides per row): each equals engine.generate with its seed."""
    model, tokenizer, _ = loaded
    jobs = [(p, _params(i, num_samples=1 + i % 3)) for i, p in enumerate(PROMPTS * 2)]
    jobs[1] = (jobs[1][0], jobs[1][1].replace(stop=("e",), min_new_tokens=3))
    jobs[2] = (jobs[2][0], jobs[2][1].replace(temperature=0.0))  # greedy beside sampled rows in one draw
    jobs[3] = (jobs[3][0], jobs[3][1].replace(presence_penalty=0.5, temperature=1.0, window_keep=9))
    alone = [generate(model, tokenizer, p, params) for p, params in jobs]
    for stagger in (0.0, 0.003):
        together = _together(batcher, model, tokenizer, jobs, stagger)
        for a, b in zip(alone, together):
            assert [(g.tokens, g.text, g.finish_reason) for g in a] == [(g.tokens, g.text, g.finish_reason) for g in b]
            for ga, gb in zip(a, b):
                assert ga.logprobs == pytest.approx(gb.logprobs, abs=1e-4)
    assert max(p.max_new_tokens for _, p in jobs) > model.config.block_size  # the slide was exercised
    assert batcher.load()["rows"] == 0


def test_streamed_pieces_concatenate_to_the_text_and_run_in_the_callers_thread(loaded, batcher):
    model, tokenizer, _ = loaded
    pieces, threads = {}, set()

    def on_token(i, piece):
        pieces[i] = pieces.get(i, "") + piece
        threads.add(threading.get_ident())

    gens = batcher.generate(model, tokenizer, "The raven", _params(0, num_samples=2, stop=("\n",)), on_token=on_token)
    assert [pieces.get(i, "") for i in range(2)] == [g.text for g in gens]
    assert threads == {threading.get_ident()}


def test_inline_callbacks_run_in_the_scheduler_and_one_that_fails_ends_only_its_request(loaded):
    model, tokenizer, _ = loaded
    b = Batcher(model, tokenizer, max_rows=8, inline_callbacks=True)
    pieces, threads = [], set()

    def on_token(i, piece):
        pieces.append(piece)
        threads.add(threading.get_ident())

    def failing(i, piece):
        raise RuntimeError("the event loop is gone")

    out = {}

    def neighbour():
        try:
            b.generate(model, tokenizer, "x", _params(1, max_new_tokens=100_000), on_token=failing)
        except Exception as e:
            out["bad"] = e

    try:
        alone = generate(model, tokenizer, "The raven", _params(0, max_new_tokens=60))
        bad = threading.Thread(target=neighbour)
        bad.start()
        gens = b.generate(model, tokenizer, "The raven", _params(0, max_new_tokens=60), on_token=on_token)
        bad.join(30)
    finally:
        b.close()
    assert "".join(pieces) == gens[0].text == alone[0].text  # the failing neighbour changed nothing
    assert threads == {b.thread.ident}
    assert isinstance(out["bad"], RuntimeError) and b.load()["finished"].get("error") == 1


def test_should_stop_frees_the_rows_at_once(loaded, batcher):
    model, tokenizer, _ = loaded
    seen, before = [], batcher.load()["finished"].get("aborted", 0)

    def on_token(i, piece):
        seen.append(piece)

    params = _params(1, max_new_tokens=100_000)
    gens = batcher.generate(model, tokenizer, "x", params, on_token=on_token, should_stop=lambda: len(seen) >= 5)
    assert gens[0].finish_reason == "aborted" and len(gens[0].tokens) < 1000
    load = batcher.load()
    assert load["rows"] == 0 and load["running"] == 0 and load["finished"]["aborted"] == before + 1


def test_a_caller_that_fails_mid_stream_gives_its_rows_back(loaded, batcher):
    model, tokenizer, _ = loaded

    def on_token(i, piece):
        raise RuntimeError("the client went away")

    with pytest.raises(RuntimeError):
        batcher.generate(model, tokenizer, "x", _params(0, max_new_tokens=100_000), on_token=on_token)
    deadline = time.monotonic() + 5
    while batcher.load()["rows"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batcher.load()["rows"] == 0


def test_a_full_waiting_line_is_refused_and_too_many_samples_are_explained(loaded):
    model, tokenizer, _ = loaded
    b = Batcher(model, tokenizer, max_rows=1, max_waiting=1)
    stop = threading.Event()
    try:
        hold = [threading.Thread(target=b.generate, args=(model, tokenizer, "x", _params(0, max_new_tokens=10**6)),
                                 kwargs={"should_stop": stop.is_set}) for _ in range(2)]
        for want, t in zip(((1, 0), (1, 1)), hold):  # one running, then one waiting
            t.start()
            deadline = time.monotonic() + 10
            while ((load := b.load())["running"], load["waiting"]) != want and time.monotonic() < deadline:
                time.sleep(0.01)
            assert (load["running"], load["waiting"]) == want
        with pytest.raises(QueueFull, match="try again"):
            b.generate(model, tokenizer, "x", _params(0))
        with pytest.raises(AtomError, match="rows this server decodes at once"):
            b.generate(model, tokenizer, "x", _params(0, num_samples=2))
    finally:
        stop.set()
        for t in hold:
            t.join(10)
        b.close()
    assert b.load()["finished"].get("aborted") == 2
