"""Notebook 05's measurements: each row says what the generation calls behind it returned."""

from __future__ import annotations

import pytest

from atomlib.evaluation import decoding
from atomlib.evaluation.metrics import distinct_n
from atomlib.generation.answer import Settings, answer
from atomlib.generation.engine import generate
from atomlib.generation.sampling import SamplingParams

PROMPT = "the night"


def test_sample_rows_describe_each_sample_of_the_batch(loaded):
    model, tok, _ = loaded
    gens = generate(model, tok, PROMPT, SamplingParams(max_new_tokens=10, num_samples=2, seed=1))
    rows = decoding.sample_rows(PROMPT, gens)
    assert [r["sample"] for r in rows] == [1, 2]
    assert [r["text"] for r in rows] == [PROMPT + g.text for g in gens]
    assert [(r["tokens"], r["ended by"], r["mean log-prob"]) for r in rows] == \
        [(len(g.tokens), g.finish_reason, g.mean_logprob) for g in gens]


def test_temperature_sweep_is_one_seeded_sample_per_temperature(loaded):
    model, tok, _ = loaded
    params = SamplingParams(max_new_tokens=30, num_samples=3, seed=2)
    rows = decoding.temperature_sweep(model, tok, PROMPT, params, temperatures=(0.0, 1.0), chars=20)
    assert [r["temperature"] for r in rows] == [0.0, 1.0]
    g = generate(model, tok, PROMPT, params.replace(temperature=1.0, num_samples=1))[0]
    assert rows[1]["text"] == (PROMPT + g.text)[:20]
    assert rows[1]["distinct-2"] == distinct_n(g.text, 2)
    assert rows[1]["mean log-prob"] == pytest.approx(g.mean_logprob)


def test_kind_answers_come_from_the_answer_pipeline(loaded):
    model, tok, _ = loaded
    prompts = ["Why do ravens croak?", "steel and thunder"]
    rows = decoding.kind_answers(model, tok, prompts, seed=3, max_new_tokens=12)
    assert [r["kind"] for r in rows] == ["question", "thematic"]
    for row, p in zip(rows, prompts):
        ans = answer(model, tok, p, Settings(seed=3, max_new_tokens=12))
        best = ans.choices[0]
        assert (row["answer (filtered)"], row["ended by"], row["passed"]) == (ans.text, best.finish_reason,
                                                                              best.filter.passed)
        assert row["temperature"] == ans.params.temperature


def test_cache_speed_rows_compare_against_no_cache(loaded):
    model, tok, _ = loaded
    rows = decoding.cache_speed(model, tok, PROMPT, n_tokens=8, batch=2, seed=1)
    assert [r["decoding"] for r in rows] == ["KV cache", "no cache", "KV cache, batch of 2"]
    assert rows[1]["speed-up"] == 1.0 and all(r["tokens/s"] > 0 for r in rows)
    assert [r["decoding"] for r in decoding.cache_speed(model, tok, PROMPT, n_tokens=4)] == ["KV cache", "no cache"]
