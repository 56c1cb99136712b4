"""Sampling presets: how each kind of prompt is sampled, and how it is shown to the model.

The model was trained on verse, not on instructions, so a prompt is framed as the start of a
verse: a request's topic becomes a title line, theme words open the verse, a question is
answered on the next line. PRESETS is one table (kind -> Preset), which a user may edit or
replace; `params_for(kind, **overrides)` turns a preset into SamplingParams and
`frame_prompt(text, kind)` gives the text the model continues. generation.adaptive says which
kind a prompt is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from atomlib.errors import AtomError
from atomlib.generation.adaptive import classify_prompt, extract_topic
from atomlib.generation.sampling import SamplingParams


@dataclass
class Preset:
    """How one kind of prompt is sampled, and how the prompt is shown to the model.

    framing is a str.format template: {text} is the prompt as typed, {topic} the subject with
    the request words taken off ("write a poem about the sea" -> "the sea"), {Topic} the same
    capitalised. Lengths are in tokens of a character model; params_for(..., tokenizer=tok)
    divides them by 4 for GPT-2 BPE (about 4 characters a token)."""

    temperature: float
    top_p: float | None
    top_k: int | None
    repetition_penalty: float
    max_new_tokens: int
    stop: tuple[str, ...]
    framing: str
    min_new_tokens: int = 0
    description: str = ""


PRESETS: dict[str, Preset] = {
    # a composition: room to wander, a whole song (ends at a blank line pair, the corpus' song break)
    "creative": Preset(temperature=0.9, top_p=0.95, top_k=None, repetition_penalty=1.15, max_new_tokens=400,
                       stop=("\n\n\n",), framing="{Topic}\n\n", min_new_tokens=60,
                       description="freer sampling, a whole song; the topic becomes a title line"),
    # an answer: conservative and short, one stanza
    "question": Preset(temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.1, max_new_tokens=160,
                       stop=("\n\n",), framing="{text}\n", min_new_tokens=20,
                       description="careful sampling, one stanza answering on the next line"),
    # a task: between the two, a few stanzas
    "command": Preset(temperature=0.75, top_p=0.92, top_k=50, repetition_penalty=1.1, max_new_tokens=240,
                      stop=("\n\n\n",), framing="{Topic}\n\n", min_new_tokens=40,
                      description="moderate sampling, a few stanzas under the topic as a title"),
    # theme words: they open the verse as its first line, the model writes the rest of it
    "thematic": Preset(temperature=0.85, top_p=0.95, top_k=None, repetition_penalty=1.12, max_new_tokens=200,
                       stop=("\n\n",), framing="{Text}\n", min_new_tokens=30,
                       description="the theme words are the verse's first line; the model goes on from there"),
}


def frame_prompt(text: str, kind: str, presets: dict[str, Preset] | None = None) -> str:
    """The text the model continues for a prompt of this kind (the preset's framing)."""
    preset = (presets or PRESETS)[kind]
    raw = " ".join(text.split())
    if "topic" in preset.framing.lower():
        topic = extract_topic(raw)
        if not topic:  # "write a poem": nothing to title it with, the model starts a song from scratch
            return ""
    else:
        topic = raw
    return preset.framing.format(text=raw, Text=raw[:1].upper() + raw[1:], topic=topic,
                                 Topic=topic[:1].upper() + topic[1:])


def params_for(kind: str, tokenizer=None, presets: dict[str, Preset] | None = None, **overrides) -> SamplingParams:
    """SamplingParams of a kind's preset; keyword overrides win (any SamplingParams field)."""
    table = presets or PRESETS
    if kind not in table:
        raise AtomError(f"unknown prompt kind {kind!r}; use one of {', '.join(table)}.")
    p = table[kind]
    scale = getattr(tokenizer, "chars_per_token", 1.0)  # presets count characters; BPE tokens hold several
    base = SamplingParams(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
                          repetition_penalty=p.repetition_penalty, max_new_tokens=max(1, int(p.max_new_tokens / scale)),
                          min_new_tokens=int(p.min_new_tokens / scale), stop=tuple(p.stop))
    fields = {f.name for f in dataclasses.fields(SamplingParams)}
    unknown = set(overrides) - fields
    if unknown:
        raise AtomError(f"unknown sampling setting {sorted(unknown)[0]!r}; use one of {', '.join(sorted(fields))}.")
    params = dataclasses.replace(base, **overrides)
    if params.min_new_tokens > params.max_new_tokens:
        params.min_new_tokens = params.max_new_tokens
    return params


def presets_table(presets: dict[str, Preset] | None = None) -> list[dict]:
    """The presets as rows (for a notebook table or the chat's /settings)."""
    return [{"kind": k, **dataclasses.asdict(p)} for k, p in (presets or PRESETS).items()]


def framing_rows(prompts: list[str], presets: dict[str, Preset] | None = None) -> list[dict]:
    """Each prompt's kind and the text the model continues for it, as table rows."""
    rows = []
    for p in prompts:
        kind = classify_prompt(p)
        rows.append({"prompt": p, "kind": kind, "framed for the model": repr(frame_prompt(p, kind, presets))})
    return rows
