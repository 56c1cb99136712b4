"""Completion mode: the scoring prefers good line endings; candidates come from one batch."""

from __future__ import annotations

import pytest

from atomlib.generation.completion import WEIGHTS, CompletionResult, complete_line, default_params, score_completion
from atomlib.generation.sampling import SamplingParams

LINE = "When the rainfall of tears drop"
GOOD = " into the river of my sorrow."  # whole line: 11 words, ends a sentence


def score(text, finish="stop", logprobs=(-1.0,) * 20):
    return score_completion(LINE, text, list(logprobs), finish)


def test_parts_are_exposed_and_bounded():
    c = score(GOOD)
    assert set(c.parts) == set(WEIGHTS)
    assert all(0.0 <= v <= 1.0 for v in c.parts.values())
    assert c.at_boundary and c.parts["length"] == 1.0 and c.parts["novelty"] == 1.0
    assert c.line == LINE + GOOD
    assert abs(c.score - sum(c.parts.values()) / len(c.parts)) < 1e-9  # equal weights: the mean


def test_a_boundary_ending_ten_word_line_beats_repetition_and_copying():
    good = score(GOOD)
    repeated = score(" tears tears tears tears tears tears.")
    copied = score(" when the rainfall of tears drop.")
    assert good.score > repeated.score and good.parts["repetition"] > repeated.parts["repetition"]
    assert good.score > copied.score and copied.parts["novelty"] == 0.0


def test_boundary_length_and_fluency_each_count():
    assert score(GOOD).score > score(" into the river of my sorr", finish="length").score  # cut mid-word
    assert score(" into the river of my sorrow", finish="length").parts["boundary"] == 0.3  # whole word, no end
    too_long = score(" into the river of my sorrow where the ravens and the wolves all go to die alone tonight.")
    assert too_long.parts["length"] < 1.0 and score(GOOD).score > too_long.score
    too_short = score(" now.")
    assert too_short.parts["length"] < 1.0
    assert score(GOOD, logprobs=[-0.5] * 10).score > score(GOOD, logprobs=[-3.0] * 10).score
    assert score("").score < score(GOOD).score


def test_weights_can_be_changed():
    only_length = {k: 0.0 for k in WEIGHTS} | {"length": 1.0}
    c = score_completion(LINE, " tears tears tears tears tears tears.", [-1.0], "stop", weights=only_length)
    assert c.score == c.parts["length"]


def test_complete_line_ranks_one_batch(tiny_run):
    from atomlib.generation import completion
    from atomlib.model.checkpoint import load_run

    model, tok, _ = load_run(tiny_run, device="cpu")
    seen = []
    real = completion.generate

    def spy(model, tokenizer, prompt, params, **kw):
        seen.append(params)
        return real(model, tokenizer, prompt, params, **kw)

    res = complete_line(model, tok, "Upon the midnight", n=5, seed=3,
                        params=SamplingParams(max_new_tokens=30), decode=spy)
    assert isinstance(res, CompletionResult) and len(res.candidates) == 5
    assert len(seen) == 1 and seen[0].num_samples == 5 and "\n" in seen[0].stop  # one batch, one line each
    scores = [c.score for c in res.candidates]
    assert scores == sorted(scores, reverse=True) and res.best is res.candidates[0]
    for c in res.candidates:
        assert "\n" not in c.text and c.line == "Upon the midnight" + c.text
        assert set(c.parts) == set(WEIGHTS) and c.filters.stages
    again = complete_line(model, tok, "Upon the midnight", n=5, seed=3, params=SamplingParams(max_new_tokens=30))
    assert [c.text for c in again.candidates] == [c.text for c in res.candidates]  # seeded


def test_default_params_end_at_the_line():
    p = default_params()
    assert "\n" in p.stop and p.max_new_tokens >= 60

    class Bpe:
        kind = "bpe"
        chars_per_token = 3.2

    assert default_params(Bpe()).max_new_tokens == 25  # the same 80 characters, in tokens


@pytest.mark.parametrize("min_new", [0, 60])
def test_complete_line_accepts_a_preset(tiny_run, min_new):
    from atomlib.generation.presets import params_for
    from atomlib.model.checkpoint import load_run

    model, tok, _ = load_run(tiny_run, device="cpu")
    params = params_for("creative", max_new_tokens=40, min_new_tokens=min_new)
    res = complete_line(model, tok, "Deep into that darkness", n=3, params=params, seed=1)
    assert len(res.candidates) == 3 and all("\n" not in c.text for c in res.candidates)


def test_result_rows_are_the_ranked_candidates_with_their_parts():
    good, bad = score(GOOD), score(" tears tears tears tears tears tears.")
    rows = CompletionResult(best=good, candidates=[good, bad], prompt=LINE).rows()
    assert rows == [{"line": c.line, "score": c.score, **c.parts} for c in (good, bad)]
