"""The one answer pipeline: a person's prompt in, a cleaned answer out.

    ans = answer(model, tokenizer, "Write a poem about ravens", Settings(seed=1))
    ans.text          # what to show: the model's answer, filtered
    ans.choices       # every sample (n of them), each with its raw text, filter record, finish reason

The chat, the evaluation, notebook 05 and any server call this, so "answer a prompt" means the
same thing everywhere. The steps, in order:

    chat mode        fit the prompt into the context -> classify it (adaptive) -> the kind's preset,
                     with the settings the caller fixed -> frame it -> sample n -> filter each
    completion mode  fit the line -> sample n endings as one batch, score and rank them (best first)

A setting left at None means "the preset decides"; a prompt kind given in Settings skips the
classifier (the evaluation's prompts carry their labelled kind).
"""

from __future__ import annotations

import dataclasses
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Callable

from atomlib.errors import AtomError
from atomlib.generation.adaptive import classify_prompt
from atomlib.generation.presets import PRESETS, frame_prompt, params_for
from atomlib.generation.completion import CompletionResult, complete_line, default_params
from atomlib.generation.filters import FilterResult, filter_sample
from atomlib.generation.engine import generate
from atomlib.generation.sampling import SamplingParams

MODES = ("chat", "completion")
# the sampling fields a caller may fix; None leaves each to the preset
OVERRIDABLE = ("temperature", "top_k", "top_p", "repetition_penalty", "frequency_penalty", "presence_penalty",
               "min_new_tokens", "max_new_tokens", "stop")


@dataclass
class Settings:
    """What the caller decides; everything left at None is decided by the prompt kind's preset."""

    mode: str = "chat"  # "chat": answer the prompt; "completion": finish the line, best of n
    n: int = 1  # chat: samples drawn as one batch; completion: candidates ranked
    seed: int | None = None
    kind: str | None = None  # None: classify the prompt; else use this kind's preset
    filters: bool = True  # False: show the samples as drawn
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    min_new_tokens: int | None = None
    max_new_tokens: int | None = None
    stop: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise AtomError(f"mode {self.mode!r} is unknown; use one of {', '.join(MODES)}.")
        if self.kind is not None and self.kind not in PRESETS:
            raise AtomError(f"unknown prompt kind {self.kind!r}; use one of {', '.join(PRESETS)}.")

    def overrides(self) -> dict:
        """The sampling fields the caller fixed."""
        return {k: getattr(self, k) for k in OVERRIDABLE if getattr(self, k) is not None}


@dataclass
class Choice:
    """One sample. `text` is what a person sees; `raw` what the model drew (prompt excluded)."""

    text: str
    raw: str
    finish_reason: str
    tokens: int
    filter: FilterResult | None = None
    score: float | None = None  # completion mode: the candidate's score


@dataclass
class Answer:
    prompt: str  # the prompt as used (after fitting into the context)
    framed: str  # the text the model continued
    kind: str | None  # the prompt kind (chat mode)
    params: SamplingParams
    choices: list[Choice]
    notes: list[str] = field(default_factory=list)  # what was changed or went wrong, for the person
    seconds: float = 0.0
    stopped: bool = False
    completion: CompletionResult | None = None  # completion mode: every candidate and its score parts

    @property
    def text(self) -> str:
        return self.choices[0].text if self.choices else ""

    @property
    def lead(self) -> str:
        """The part of the framed prompt that is part of the answer: a framing the model continues
        mid-line (theme words opening a verse). Streaming sends it before the first token."""
        return lead_of(self.framed) if self.kind is not None else ""


def lead_of(framed: str) -> str:
    return framed if framed and not framed.endswith("\n") else ""


def answer(model, tokenizer, prompt: str, settings: Settings | None = None, *,
           on_token: Callable[[int, str], None] | None = None,
           should_stop: Callable[[], bool] | None = None, decode: Callable = generate) -> Answer:
    """Answer one prompt. on_token(i, piece) streams sample i as it is drawn (in chat mode a framed
    prompt the model continues mid-line comes first, as it is part of the answer); should_stop()
    ends the generation at its next token (a stop button). decode is what samples: engine.generate,
    or a Batcher's generate (`atom serve`: many prompts decoded together), with the same results."""
    settings = settings or Settings()
    t0 = time.monotonic()
    if settings.mode == "completion":
        ans = _complete(model, tokenizer, prompt, settings, on_token, should_stop, decode)
    else:
        ans = _chat(model, tokenizer, prompt, settings, on_token, should_stop, decode)
    ans.seconds = time.monotonic() - t0
    ans.stopped = bool(should_stop and should_stop())
    if ans.stopped:
        ans.notes.append("stopped")
    return ans


def chat_params(tokenizer, kind: str, settings: Settings) -> SamplingParams:
    """The sampling a chat-mode prompt of this kind gets: its preset, then the caller's settings."""
    return params_for(kind, tokenizer=tokenizer, seed=settings.seed, num_samples=max(1, settings.n),
                      **settings.overrides())


def completion_params(tokenizer, settings: Settings) -> SamplingParams:
    """Completion mode's own defaults, then the caller's settings."""
    return dataclasses.replace(default_params(tokenizer), seed=settings.seed, **settings.overrides())


def _chat(model, tokenizer, text, settings, on_token, should_stop, decode) -> Answer:
    kind = settings.kind or classify_prompt(text)
    params = chat_params(tokenizer, kind, settings)
    block = int(model.config.block_size)
    kept, notes = fit_prompt(tokenizer, text, block - min(params.max_new_tokens, block // 2) - _framing(tokenizer, kind),
                             block)
    framed = frame_prompt(kept, kind)
    lead = lead_of(framed)
    if lead and on_token:
        for i in range(params.num_samples):
            on_token(i, lead)
    gens = decode(model, tokenizer, framed, params, on_token=on_token, should_stop=should_stop)
    choices = [_chat_choice(g, framed, lead, settings.filters, notes) for g in gens]
    return Answer(kept, framed, kind, params, choices, notes)


def _chat_choice(gen, framed: str, lead: str, use_filters: bool, notes: list[str]) -> Choice:
    filt = filter_sample(gen, prompt=framed or None)
    body = (filt.text if use_filters else gen.text).strip()
    if not body and gen.text.strip():
        body = gen.text.strip()
        notes.append(f"the filters removed everything ({filt.reason or 'low quality'}); showing the raw sample")
    if not body:
        notes.append("the model produced no text")
    if lead and body:
        sep = gen.text[:1] if gen.text[:1].isspace() else ""  # keep the space or line break that joined them
        shown = lead + sep + body
    else:
        shown = body or lead
    return Choice(shown, gen.text, gen.finish_reason, len(gen.tokens), filt)


def _complete(model, tokenizer, text, settings, on_token, should_stop, decode) -> Answer:
    params = completion_params(tokenizer, settings)
    block = int(model.config.block_size)
    line, notes = fit_prompt(tokenizer, text.rstrip("\r\n"), block - min(params.max_new_tokens, block // 2), block)
    result = complete_line(model, tokenizer, line, n=max(1, settings.n), params=params, seed=settings.seed,
                           on_token=on_token, should_stop=should_stop, decode=decode)
    choices = [Choice(line + c.text if settings.filters else line + c.raw, c.raw, c.finish_reason,
                      c.tokens, c.filters, c.score)
               for c in result.candidates]
    if not result.best.text.strip():
        notes.append("no candidate produced text")
    return Answer(line, line, None, params, choices, notes, completion=result)


def _framing(tokenizer, kind: str) -> int:
    """Tokens the kind's framing adds around a prompt, so the framed prompt still fits."""
    return max(0, len(tokenizer.encode(frame_prompt("x", kind))) - 1)


# --- fitting a prompt into the context -------------------------------------------------------------


def fit_prompt(tokenizer, text: str, budget: int, block_size: int) -> tuple[str, list[str]]:
    """The tail of `text` that fits in `budget` tokens, and notes for the person about what changed."""
    notes = []
    budget = max(8, int(budget))
    unknown = unknown_chars(tokenizer, text)
    if unknown:
        shown = "".join(sorted(set(unknown))[:5])
        notes.append(f"{len(unknown)} character(s) the model never saw ({shown!r}) were replaced")
    head = text[-budget * 64:] if len(text) > budget * 64 else text  # no need to encode a novel to keep a page
    ids = tokenizer.encode(head)
    if len(ids) <= budget and len(head) == len(text):
        return text, notes
    kept = tokenizer.decode(ids[-budget:])
    if tokenizer.kind == "char":  # decode() maps unknown characters to '?': keep the person's own text
        kept = text[-len(kept):] if len(kept) <= len(text) else kept
    notes.append(f"your message had {len(text):,} characters; only its last {len(kept):,} were used "
                 f"(the model sees {block_size} tokens at a time, the answer included)")
    return kept, notes


def unknown_chars(tokenizer, text: str) -> list[str]:
    """Characters of `text` a character-level model never saw, even after dropping accents."""
    stoi = getattr(tokenizer, "stoi", None)
    if stoi is None:
        return []
    out = []
    for c in text[:200_000]:
        if c in stoi:
            continue
        parts = [d for d in unicodedata.normalize("NFKD", c) if not unicodedata.combining(d)]
        if not parts or any(d not in stoi for d in parts):
            out.append(c)
    return out
