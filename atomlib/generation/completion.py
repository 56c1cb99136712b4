"""Completion mode: finish an unfinished line, best of N.

    result = complete_line(model, tokenizer, "When the rainfall of tears drop", n=8, seed=1)
    result.best.line       # the whole line, prompt + completion
    result.best.parts      # why it won: each part of the score, 0..1
    result.candidates      # every candidate, best first

The N candidates are sampled together as one batch (one prefill of the line, then N rows
decoded side by side) and each stops at the end of the line ("\\n"). Each is cleaned by the
filter pipeline and scored by a weighted mean of six parts, each in [0, 1]:

    fluency     mean log-probability of its tokens under the model: 1 + mean/5, clipped
                (0 at -5 nats a token, 1 at certainty)
    boundary    it ends at a line or sentence boundary (1), on a whole word (0.3), or mid-word (0)
    length      the whole line (prompt + completion) has 8-15 words (1), falling by 1/6 a word outside
    repetition  no repeated content word or word pair in the whole line
    novelty     not a copy of the prompt: the share of its word pairs (and words) the prompt lacks
    filters     passed every filter with nothing stripped (1), passed after stripping (0.5), failed (0)

WEIGHTS holds the weights (all 1 by default) and may be changed, or passed per call.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from atomlib.generation.filters import CLEAN_ENDS, FilterResult, apply_filters, is_word
from atomlib.generation.engine import generate
from atomlib.generation.sampling import SamplingParams

WEIGHTS = {"fluency": 1.0, "boundary": 1.0, "length": 1.0, "repetition": 1.0, "novelty": 1.0, "filters": 1.0}
LINE_WORDS = (8, 15)  # the length a finished line should have, prompt included
STOPWORDS = set("""a an the and or but of to in on at by for with from as is are was were be been am i you he she it
we they me my your his her its our their this that these those not no so if then than too very can will just
do does did has have had o oh""".split())
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_BOUNDARY = re.compile(r"[.!?…;:,\-—\"'”’)]\s*\Z")


@dataclass
class Candidate:
    text: str  # the completion: what follows the line (cleaned by the filters)
    score: float
    parts: dict
    filters: FilterResult
    at_boundary: bool
    line: str = ""  # the whole line: prompt + completion
    raw: str = ""  # the completion as sampled, before the filters
    mean_logprob: float = float("-inf")
    finish_reason: str = ""
    tokens: int = 0  # tokens sampled for it


@dataclass
class CompletionResult:
    best: Candidate
    candidates: list[Candidate] = field(default_factory=list)  # ranked, best first (best included)
    prompt: str = ""

    def rows(self) -> list[dict]:
        """One row per candidate, best first: the whole line, its score and each part of it."""
        return [{"line": c.line, "score": c.score, **c.parts} for c in self.candidates]


def default_params(tokenizer=None) -> SamplingParams:
    """Sampling for line endings: a little conservative, one line (stop at a newline), room
    for about 15 words (80 characters, or 20 GPT-2 tokens)."""
    tokens = max(1, int(80 / getattr(tokenizer, "chars_per_token", 1.0)))
    return SamplingParams(temperature=0.8, top_p=0.95, repetition_penalty=1.1, max_new_tokens=tokens, stop=("\n",))


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _pairs(words: list[str]) -> list[tuple[str, str]]:
    return list(zip(words, words[1:]))


def score_completion(line: str, text: str, logprobs: list[float] | None = None, finish_reason: str = "stop",
                     filters: FilterResult | None = None, raw: str | None = None,
                     weights: dict | None = None) -> Candidate:
    """Score one completion `text` of `line` (see the module docstring); logprobs are its tokens'
    log-probabilities under the model (None: fluency counts as 0.5, e.g. for a hand-written text)."""
    weights = weights or WEIGHTS
    filters = filters or apply_filters(text, prompt=line, complete=finish_reason in CLEAN_ENDS, min_words=1)
    full = line + text
    parts: dict[str, float] = {}

    if logprobs:
        mean = sum(logprobs) / len(logprobs)
        parts["fluency"] = min(1.0, max(0.0, 1.0 + mean / 5.0))
    else:
        mean = float("-inf") if logprobs is not None else 0.0
        parts["fluency"] = 0.0 if logprobs is not None else 0.5

    stripped = text.rstrip()
    at_boundary = bool(stripped) and (finish_reason in CLEAN_ENDS or bool(_BOUNDARY.search(stripped)))
    last = _WORD.findall(stripped)[-1:] if stripped else []
    parts["boundary"] = 1.0 if at_boundary else (0.3 if last and stripped[-1].isalpha() and is_word(last[0]) else 0.0)

    n = len(_words(full))
    lo, hi = LINE_WORDS
    parts["length"] = 1.0 if lo <= n <= hi else max(0.0, 1.0 - (lo - n if n < lo else n - hi) / 6.0)

    words = _words(full)
    content = [w for w in words if w not in STOPWORDS]
    distinct = len(set(content)) / len(content) if content else 1.0
    pairs = _pairs(words)
    repeated_pairs = len(pairs) - len(set(pairs))
    parts["repetition"] = max(0.0, min(1.0, distinct - 2.0 * repeated_pairs / max(1, len(pairs))))

    new_words, old_words = _words(text), _words(line)
    if not new_words:
        parts["novelty"] = 0.0
    else:
        old_pairs = set(_pairs(old_words))
        new_pairs = _pairs(new_words)
        copied_pairs = sum(p in old_pairs for p in new_pairs) / len(new_pairs) if new_pairs else 0.0
        copied_words = sum(w in set(old_words) for w in new_words if w not in STOPWORDS) / max(
            1, sum(w not in STOPWORDS for w in new_words))
        copied = max(copied_pairs, copied_words if len(new_words) >= 2 else 0.0)
        if " ".join(new_words) in " ".join(old_words) and len(new_words) >= 2:
            copied = 1.0
        parts["novelty"] = 1.0 - copied

    if not filters.passed:
        parts["filters"] = 0.0
    else:
        parts["filters"] = 1.0 if filters.artifact_free else 0.5

    total = sum(weights.get(k, 0.0) for k in parts)
    score = sum(weights.get(k, 0.0) * v for k, v in parts.items()) / total if total else 0.0
    return Candidate(text=text, score=score, parts=parts, filters=filters, at_boundary=at_boundary, line=full,
                     raw=text if raw is None else raw, mean_logprob=mean, finish_reason=finish_reason)


def _clean(line: str, raw: str, finish_reason: str) -> tuple[str, FilterResult]:
    """The filtered completion, keeping the space (or its absence) that joins it to the line."""
    filt = apply_filters(raw, prompt=line, complete=finish_reason in CLEAN_ENDS, min_words=1)
    text = filt.text
    if text and raw[:1].isspace() and not text[:1].isspace() and not line[-1:].isspace():
        text = " " + text
    return text, filt


def complete_line(model, tokenizer, line: str, n: int = 8, params: SamplingParams | None = None,
                  seed: int | None = None, weights: dict | None = None, on_token=None,
                  should_stop=None, decode=generate) -> CompletionResult:
    """N endings of an unfinished line, sampled as one batch, scored and ranked (best first).

    params defaults to default_params(tokenizer); whatever is given, a newline always ends a
    candidate and min_new_tokens is capped at 2 (a line may be nearly finished already).
    on_token / should_stop are passed to decode (engine.generate, or a Batcher's: streaming and the
    stop button)."""
    line = line.rstrip("\r\n")
    params = params or default_params(tokenizer)
    stops = tuple(dict.fromkeys((*params.stop, "\n")))
    params = dataclasses.replace(params, num_samples=max(1, int(n)), stop=stops,
                                 min_new_tokens=min(params.min_new_tokens, 2),
                                 seed=seed if seed is not None else params.seed)
    gens = decode(model, tokenizer, line, params, on_token=on_token, should_stop=should_stop)
    candidates = []
    for g in gens:
        text, filt = _clean(line, g.text, g.finish_reason)
        cand = score_completion(line, text, g.logprobs, g.finish_reason, filters=filt, raw=g.text, weights=weights)
        cand.tokens = len(g.tokens)
        candidates.append(cand)
    candidates.sort(key=lambda c: (c.score, c.parts.get("fluency", 0.0)), reverse=True)
    return CompletionResult(best=candidates[0], candidates=candidates, prompt=line)
