"""What the evaluation scores: the prompt set, the model's answers to it, and the baselines.

Prompts: the shipped atomlib/assets/eval_prompts.jsonl (6 prompts of each kind: creative,
question, command, thematic, and unfinished lines for completion mode) or a JSONL file of
{"prompt", "kind"?, "mode"?}.

The model's samples come from the one answer pipeline (generation.answer): prompt i, with its
labelled kind, gets that kind's preset and framing and seed `seed + i`, `num_samples` samples in
one seeded batch; each row keeps the raw output (before the filters) and the filter record.
Completion lines are answered in completion mode (best of n, seed `seed + 100000 + k`).

Baselines, on the same prompts, lengths and seeds: a unigram and a bigram character model
fitted on the train split, and held-out val documents cut to the length of the model's output
for the same prompt.
"""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from atomlib.errors import AtomError
from atomlib.evaluation.char_ngrams import CharNgramModel
from atomlib.evaluation.metrics import known_word_rate
from atomlib.evaluation.scoring import mean
from atomlib.generation.adaptive import KINDS, classify_prompt
from atomlib.generation.answer import Settings, answer
from atomlib.generation.completion import default_params
from atomlib.generation.filters import apply_filters, is_word

BASELINES = ("bigram", "unigram", "val_docs")

# --- prompts -------------------------------------------------------------------------------


def default_prompts_path() -> Path:
    return Path(str(resources.files("atomlib").joinpath("assets/eval_prompts.jsonl")))


def _read_prompt_file(path: Path) -> list[dict]:
    if not path.is_file():
        raise AtomError(f"prompts file {path} does not exist; pass a JSONL file with one {{\"prompt\": ...}} per line.")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise AtomError(f"{path} line {n} is not JSON; each line must be an object like "
                            '{"prompt": "..."}.') from None
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) or not rec["prompt"].strip():
            raise AtomError(f"{path} line {n} has no \"prompt\" text; each line needs {{\"prompt\": \"...\"}}.")
        kind = rec.get("kind")
        if kind is not None and kind not in KINDS:
            raise AtomError(f"{path} line {n} has kind {kind!r}; use one of {', '.join(KINDS)} or leave it out.")
        records.append(rec)
    return records


def load_prompts(path=None) -> tuple[list[dict], list[str]]:
    """(generation prompts [{"prompt", "kind"}], unfinished lines for completion mode).

    Records with "mode": "completion" are completion lines; a file without any uses the
    shipped ones. A prompt without a kind gets adaptive.classify_prompt's."""
    shipped = _read_prompt_file(default_prompts_path())
    records = _read_prompt_file(Path(path)) if path is not None else shipped
    prompts = [r for r in records if r.get("mode", "generate") != "completion"]
    lines = [r["prompt"] for r in records if r.get("mode") == "completion"]
    if not lines:
        lines = [r["prompt"] for r in shipped if r.get("mode") == "completion"]
    if not prompts:
        raise AtomError(f"prompts file {path} holds no generation prompts (only completion lines); add some.")
    return [{"prompt": r["prompt"], "kind": r.get("kind") or classify_prompt(r["prompt"])} for r in prompts], lines


def first_per_kind(prompts: list[dict], lines: list[str], per_kind: int | None) -> tuple[list[dict], list[str]]:
    """A quick look: the first `per_kind` prompts of each kind and as many completion lines."""
    if per_kind is None:
        return prompts, lines
    return [p for k in KINDS for p in [q for q in prompts if q["kind"] == k][:per_kind]], lines[:per_kind]


# --- the model's samples ---------------------------------------------------------------------


def prompt_seed(seed: int, i: int) -> int:
    """The seed of prompt i's batch of samples."""
    return seed + i


def line_seed(seed: int, k: int) -> int:
    """The seed of completion line k's candidates."""
    return seed + 100_000 + k


def sample_seed(seed: int, i: int, j: int) -> int:
    """The seed of sample j of prompt i for the baselines (one generator per sample)."""
    return seed + 1000 * i + j


def generate_samples(model, tokenizer, prompts: Sequence[dict], num_samples: int, seed: int,
                     max_new_tokens: int | None = None, progress: bool = True) -> list[dict]:
    """Answer each prompt as its labelled kind; one row per sample, with its filter record."""
    out = []
    for i, p in enumerate(tqdm(prompts, desc="generate", unit="prompt", disable=not progress, leave=False)):
        ans = answer(model, tokenizer, p["prompt"], Settings(kind=p["kind"], seed=prompt_seed(seed, i), n=num_samples,
                                                             max_new_tokens=max_new_tokens))
        for j, c in enumerate(ans.choices):
            out.append({"source": "model", "prompt": p["prompt"], "kind": p["kind"], "index": i, "sample": j,
                        "seed": ans.params.seed, "framed_prompt": ans.framed, "output": c.raw,
                        "finish_reason": c.finish_reason, "filter": c.filter})
    return out


def completion_samples(model, tokenizer, lines: Sequence[str], seed: int, n: int = 8,
                       max_new_tokens: int | None = None, progress: bool = True) -> list[dict]:
    """Each unfinished line completed, best of n; success = the best candidate ends at a boundary
    and passes all filters. max_new_tokens caps completion mode's own length, never raises it."""
    cap = None if max_new_tokens is None else min(default_params(tokenizer).max_new_tokens, max_new_tokens)
    out = []
    for k, line in enumerate(tqdm(lines, desc="completion", unit="line", disable=not progress, leave=False)):
        res = answer(model, tokenizer, line, Settings(mode="completion", n=n, seed=line_seed(seed, k),
                                                      max_new_tokens=cap)).completion
        best = res.best
        passed = bool(best.filters.passed)
        metrics = {"at_boundary": bool(best.at_boundary), "filter_passed": passed,
                   "success": bool(best.at_boundary) and passed, "known_words": known_word_rate(best.text, is_word),
                   "score": float(best.score), "candidates": len(res.candidates)}
        out.append({"source": "completion", "prompt": line, "kind": None, "index": k, "seed": line_seed(seed, k),
                    "output": best.text, "raw": best.raw, "metrics": metrics})
    return out


def sample_known_words(model, tokenizer, num_samples: int = 2, seed: int = 1234, progress: bool = True) -> float | None:
    """The model's known-word rate as `atom eval` measures it (its prompt set, presets, seeds and
    measure), without the rest of the evaluation: what `atom race` reports for each run."""
    prompts, _ = load_prompts()
    samples = generate_samples(model, tokenizer, prompts, num_samples, seed, progress=progress)
    return mean(known_word_rate(s["output"], is_word) for s in samples)


# --- baselines -------------------------------------------------------------------------------


def baseline_samples(model_samples: Sequence[dict], unigram: CharNgramModel, bigram: CharNgramModel,
                     val_docs: Sequence[str], seed: int) -> dict[str, list[dict]]:
    """For each model sample, a unigram and a bigram sample of the same length (chars) and seed,
    and a held-out document cut to that length (documents in a seeded shuffled order, cycled)."""
    order = list(range(len(val_docs)))
    random.Random(seed).shuffle(order)
    rows: dict[str, list[dict]] = {name: [] for name in BASELINES}
    for k, s in enumerate(model_samples):
        length = len(s["output"])
        sd = sample_seed(seed, s["index"], s["sample"])
        texts = {
            "unigram": unigram.generate(length, sd),
            "bigram": bigram.generate(length, sd, context=s.get("framed_prompt") or s["prompt"]),
            "val_docs": val_docs[order[k % len(order)]][:length] if val_docs else "",
        }
        for name, text in texts.items():
            continues = None if name == "val_docs" else s.get("framed_prompt") or s["prompt"]
            rows[name].append({"source": name, "prompt": s["prompt"], "kind": s["kind"], "index": s["index"],
                               "sample": s["sample"], "seed": sd, "output": text,
                               "filter": apply_filters(text, prompt=continues)})
    return rows
