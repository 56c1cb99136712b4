"""The one answer pipeline: chat and completion modes, settings over presets, fitting, streaming."""

from __future__ import annotations

import pytest

from atomlib.errors import AtomError
from atomlib.generation.adaptive import classify_prompt
from atomlib.generation.presets import frame_prompt, params_for
from atomlib.generation.answer import Settings, answer, fit_prompt, unknown_chars
from atomlib.generation.filters import apply_filters
from atomlib.generation.engine import generate


def test_chat_answer_is_the_preset_sample_filtered(loaded):
    """answer() is exactly: classify, preset, frame, generate, filter, as its docstring says."""
    model, tok, _ = loaded
    prompt = "Write a poem about ravens"
    ans = answer(model, tok, prompt, Settings(seed=3, max_new_tokens=40))
    kind = classify_prompt(prompt)
    framed = frame_prompt(prompt, kind)
    params = params_for(kind, tokenizer=tok, seed=3, max_new_tokens=40)
    g = generate(model, tok, framed, params)[0]
    assert (ans.kind, ans.framed, ans.params) == (kind, framed, params)
    assert ans.choices[0].raw == g.text and ans.choices[0].finish_reason == g.finish_reason
    filt = apply_filters(g.text, prompt=framed or None, complete=g.finish_reason in ("stop", "eot"))
    assert ans.choices[0].filter == filt
    assert filt.text.strip() in ans.text or not filt.text.strip()


def test_settings_override_the_preset_and_n_gives_n_choices(loaded):
    model, tok, _ = loaded
    ans = answer(model, tok, "steel and thunder", Settings(seed=1, n=3, temperature=1.3, top_k=5, max_new_tokens=12))
    assert len(ans.choices) == 3
    assert (ans.params.temperature, ans.params.top_k, ans.params.max_new_tokens) == (1.3, 5, 12)
    assert all(c.tokens <= 12 for c in ans.choices)
    again = answer(model, tok, "steel and thunder", Settings(seed=1, n=3, temperature=1.3, top_k=5, max_new_tokens=12))
    assert [c.raw for c in again.choices] == [c.raw for c in ans.choices]  # a seed reproduces the batch


def test_a_given_kind_skips_the_classifier(loaded):
    model, tok, _ = loaded
    ans = answer(model, tok, "Why do ravens croak?", Settings(seed=1, kind="thematic", max_new_tokens=8))
    assert classify_prompt("Why do ravens croak?") == "question" and ans.kind == "thematic"
    with pytest.raises(AtomError, match="unknown prompt kind"):
        Settings(kind="sonnet")
    with pytest.raises(AtomError, match="mode 'rap' is unknown"):
        Settings(mode="rap")


def test_filters_off_shows_the_sample_as_drawn(loaded):
    model, tok, _ = loaded
    ans = answer(model, tok, "the night", Settings(seed=2, filters=False, max_new_tokens=30))
    assert ans.text.endswith(ans.choices[0].raw.strip())


def test_completion_mode_ranks_candidates_best_first(loaded):
    model, tok, _ = loaded
    ans = answer(model, tok, "When the rain falls\n", Settings(mode="completion", n=4, seed=5, max_new_tokens=10))
    assert ans.prompt == "When the rain falls" and ans.completion is not None
    scores = [c.score for c in ans.choices]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    assert all(c.text.startswith("When the rain falls") for c in ans.choices)
    assert ans.text == "When the rain falls" + ans.completion.best.text


def test_streaming_sends_each_sample_and_stop_ends_it(loaded):
    model, tok, _ = loaded
    pieces: dict[int, str] = {}
    ans = answer(model, tok, "steel and thunder", Settings(seed=4, n=2, max_new_tokens=20),
                 on_token=lambda i, p: pieces.__setitem__(i, pieces.get(i, "") + p))
    lead = ans.lead
    assert [pieces[i] for i in range(2)] == [lead + c.raw for c in ans.choices]
    stopped = answer(model, tok, "steel and thunder", Settings(seed=4, max_new_tokens=200), should_stop=lambda: True)
    assert stopped.stopped and "stopped" in stopped.notes and stopped.choices[0].tokens <= 1


def test_a_long_prompt_keeps_its_tail_and_says_so(loaded):
    model, tok, _ = loaded
    long = "the raven " * 500 + "end"
    kept, notes = fit_prompt(tok, long, 20, model.config.block_size)
    assert long.endswith(kept) and len(tok.encode(kept)) <= 20 and notes == [notes[-1]] and "only its last" in notes[0]
    ans = answer(model, tok, long, Settings(seed=1, max_new_tokens=8))
    assert ans.prompt.endswith("end") and len(ans.prompt) < len(long)
    assert any("only its last" in n for n in ans.notes)


def test_characters_the_model_never_saw_are_named(loaded):
    model, tok, _ = loaded
    assert unknown_chars(tok, "the night") == []
    assert unknown_chars(tok, "the night \u2603") == ["\u2603"]
    _, notes = fit_prompt(tok, "the night \u2603", 50, model.config.block_size)
    assert "never saw" in notes[0]
