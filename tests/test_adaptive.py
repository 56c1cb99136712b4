"""Adaptive sampling: the prompt classifier on labelled prompts, the presets and the framing."""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path

import pytest

from atomlib.generation import adaptive
from atomlib.generation.adaptive import KINDS, classify_prompt, extract_topic
from atomlib.generation.presets import PRESETS, Preset, frame_prompt, framing_rows, params_for
from atomlib.errors import AtomError
from atomlib.generation.sampling import SamplingParams

DATA = Path(__file__).parent / "data"


def load(name):
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def accuracy(rows):
    per, ok, wrong = collections.Counter(), collections.Counter(), []
    for r in rows:
        got = classify_prompt(r["prompt"])
        per[r["kind"]] += 1
        ok[r["kind"]] += got == r["kind"]
        if got != r["kind"]:
            wrong.append(f"{r['prompt']!r}: {r['kind']} -> {got}")
    overall = sum(ok.values()) / len(rows)
    return overall, {k: ok[k] / per[k] for k in KINDS}, wrong


def test_labelled_set_is_big_and_balanced():
    rows = adaptive.labelled_prompts()
    counts = collections.Counter(r["kind"] for r in rows)
    assert len(rows) >= 160 and all(counts[k] >= 40 for k in KINDS), counts
    assert len({r["prompt"] for r in rows}) == len(rows)  # no duplicates


@pytest.mark.parametrize("name", ["prompts_labelled.jsonl", "prompts_heldout.jsonl"])
def test_classifier_accuracy(name):
    overall, per_kind, wrong = accuracy(adaptive.labelled_prompts() if name == "prompts_labelled.jsonl" else load(name))
    print(f"\n{name}: overall {overall:.3f}, " + ", ".join(f"{k} {v:.3f}" for k, v in per_kind.items()))
    for w in wrong:
        print("  wrong:", w)
    assert overall >= 0.9 and all(v >= 0.8 for v in per_kind.values()), wrong


@pytest.mark.parametrize("prompt,kind", [
    ("Tell me a song about war", "creative"),  # the asked-for thing is a song: creative wins over the command verb
    ("Can you write a song?", "creative"),  # a polite question that asks for a composition
    ("Describe the sea in verse", "creative"),
    ("Who wrote this song?", "question"),  # about a song, not asking for one
    ("What is a sonnet?", "question"),
    ("Fire?", "question"),
    ("Can you feel the fire?", "question"),
    ("Could you explain the myth of Orpheus?", "command"),  # a polite command stays a command
    ("Please describe a haunted forest.", "command"),
    ("Write a summary of the album", "command"),
    ("what a night", "thematic"),  # an exclamation
    ("How dark the night", "thematic"),
    ("When the night falls", "thematic"),
    ("Will of iron", "thematic"),
    ("fire", "thematic"),
    ("  steel and thunder   ", "thematic"),
    ("🔥🔥🔥", "thematic"),
    ("write a poem 🤘", "creative"),
    ("", "thematic"),
    ("Read this poem aloud", "command"),  # an existing poem: no composition asked for
    ("Give me the lyrics of Paranoid", "command"),
    ("Name of the rose", "thematic"),  # a task verb used as a noun
    ("Burn the witch", "thematic"),  # action verbs are themes, not commands
    ("ballad of the black ship", "creative"),
    ("The song of the wind", "thematic"),
])
def test_tricky_prompts(prompt, kind):
    assert classify_prompt(prompt) == kind


def test_presets_cover_every_kind_and_give_sampling_params():
    assert set(PRESETS) == set(KINDS)
    for kind, preset in PRESETS.items():
        assert isinstance(preset, Preset)
        p = params_for(kind)
        assert isinstance(p, SamplingParams) and p.checked() is p
        assert (p.temperature, p.top_p, p.top_k, p.repetition_penalty, p.max_new_tokens, p.stop) == \
               (preset.temperature, preset.top_p, preset.top_k, preset.repetition_penalty, preset.max_new_tokens,
                tuple(preset.stop))
    # the kinds really differ: answers are more careful than compositions
    assert PRESETS["question"].temperature < PRESETS["creative"].temperature


def test_params_for_overrides_and_errors():
    p = params_for("creative", temperature=1.2, seed=5, num_samples=3)
    assert (p.temperature, p.seed, p.num_samples) == (1.2, 5, 3)
    assert params_for("creative").temperature == PRESETS["creative"].temperature  # the table is untouched
    short = params_for("creative", max_new_tokens=10)
    assert short.min_new_tokens <= short.max_new_tokens == 10
    with pytest.raises(AtomError, match="temprature"):
        params_for("creative", temprature=1.0)
    with pytest.raises(AtomError, match="poem"):
        params_for("poem")
    custom = {**PRESETS, "thematic": dataclasses.replace(PRESETS["thematic"], temperature=0.1)}
    assert params_for("thematic", presets=custom).temperature == 0.1


def test_params_for_scales_lengths_by_characters_per_token():
    class Bpe:
        kind = "bpe"
        chars_per_token = 2.5

    from atomlib.data.tokenizer import GPT2Tokenizer

    assert params_for("creative", tokenizer=Bpe()).max_new_tokens == int(PRESETS["creative"].max_new_tokens / 2.5)
    assert params_for("creative", tokenizer=Bpe()).min_new_tokens == int(PRESETS["creative"].min_new_tokens / 2.5)
    assert GPT2Tokenizer.chars_per_token == 4.0  # (a class attribute: no BPE files needed to read it)
    assert params_for("creative").max_new_tokens == PRESETS["creative"].max_new_tokens  # characters


@pytest.mark.parametrize("text,topic", [
    ("Could you write me a song about the raven at midnight?", "the raven at midnight"),
    ("Tell me a song about war", "war"),
    ("ballad of the black ship", "the black ship"),
    ("Describe a battlefield at dawn", "a battlefield at dawn"),
    ("Write a poem", ""),
    ("steel and thunder", "steel and thunder"),
])
def test_extract_topic(text, topic):
    assert extract_topic(text) == topic


def test_frame_prompt_follows_the_preset():
    assert frame_prompt("Write a poem about ravens", "creative") == "Ravens\n\n"
    assert frame_prompt("Why do ravens croak?", "question") == "Why do ravens croak?\n"
    assert frame_prompt("steel and thunder", "thematic") == "Steel and thunder\n"
    assert frame_prompt("Write a poem", "creative") == ""  # no topic: the model starts a song from nothing
    custom = {**PRESETS, "thematic": dataclasses.replace(PRESETS["thematic"], framing="~ {text} ~\n")}
    assert frame_prompt("fire", "thematic", presets=custom) == "~ fire ~\n"


def test_framing_rows_show_kind_and_framed_text():
    assert framing_rows(["Write a poem about ravens", "steel and thunder"]) == [
        {"prompt": "Write a poem about ravens", "kind": "creative", "framed for the model": repr("Ravens\n\n")},
        {"prompt": "steel and thunder", "kind": "thematic", "framed for the model": repr("Steel and thunder\n")}]


def test_classifier_scores_compare_label_and_prediction():
    rows = adaptive.classifier_scores([{"prompt": "Why do ravens croak?", "kind": "question"},
                                       {"prompt": "steel and thunder", "kind": "question"}])
    assert rows == [{"prompt": "Why do ravens croak?", "kind": "question", "predicted": "question", "correct": True},
                    {"prompt": "steel and thunder", "kind": "question", "predicted": "thematic", "correct": False}]
    assert [r["prompt"] for r in adaptive.classifier_scores()] == [r["prompt"] for r in adaptive.labelled_prompts()]
