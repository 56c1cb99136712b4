"""Tables, plots and printouts of the data stage, for notebooks 01 and 02.

Each function turns what a pipeline step returned (the fetched files, clean()'s report, a
prepared dataset's statistics) into something to look at, so a notebook cell stays a story plus
one call. Plots return their matplotlib Figure; the notebook shows it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from atomlib.paths import data_dir

DARK_RED = "#5a0000"


# --- notebook 01: sources and cleaning -------------------------------------------------------


def files_table(files: list[Path]) -> pd.DataFrame:
    """The fetched files, as paths under data/raw/, with their sizes in kB."""
    return pd.DataFrame([{"file": p.relative_to(data_dir("raw")).as_posix(), "kB": round(p.stat().st_size / 1024)}
                         for p in files])


def rules_frame(report: dict) -> pd.DataFrame:
    """What each cleaning rule removed or changed, most first."""
    return pd.Series(report["rules"], name="count").sort_values(ascending=False).to_frame()


def plot_rule_counts(report: dict):
    """The rules that did something, as bars on a log scale (counts span several decades)."""
    counts = rules_frame(report)["count"]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    counts[counts > 0].plot.barh(ax=ax, color=DARK_RED)
    ax.set_xscale("log")
    ax.set_xlabel("items removed or changed (log scale)")
    ax.invert_yaxis()
    ax.set_title("what each cleaning rule did")
    fig.tight_layout()
    return fig


def report_summary(report: dict) -> dict:
    """clean()'s report without the per-rule counts: documents, characters, sources, files."""
    return {k: v for k, v in report.items() if k != "rules"}


def show_documents(corpus: str | Path, n: int = 3, seed: int = 0, chars: int = 400) -> None:
    """Print `n` documents of the corpus drawn at random (seeded): id, title, source, the text's start."""
    with open(corpus, encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    for d in random.Random(seed).sample(docs, min(n, len(docs))):
        print(f"--- {d['id']} · {d.get('title')} ({d['source']})")
        print(d["text"][:chars], "\n")


# --- notebook 02: prepared token arrays ------------------------------------------------------


def meta_summary(meta: dict) -> dict:
    """A dataset's meta.json without the long parts (the character list, a corpus BPE's spec)."""
    return {k: v for k, v in meta.items() if k not in ("chars", "bpe")}


def split_table(stats: dict) -> pd.DataFrame:
    """Documents, tokens and characters of the train and val splits (from prepare.dataset_stats)."""
    return pd.DataFrame({
        "split": ["train", "val"],
        "documents": [stats["train_docs"], stats["val_docs"]],
        "tokens": [stats["train_tokens"], stats["val_tokens"]],
        "characters": [stats["train_chars"], stats["val_chars"]],
    }).set_index("split")


def _label(token: str) -> str:
    """A token as an axis label: escapes shown (\\n), whitespace-only tokens quoted."""
    return repr(token)[1:-1] if token.strip() else repr(token)


def plot_top_tokens(stats: dict, n: int = 40):
    """The `n` most frequent characters (char tokenizer) or tokens in the train split."""
    counts = stats.get("char_counts") or stats.get("token_counts")
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    fig, ax = plt.subplots(figsize=(12, 3.5))
    ax.bar(range(len(top)), [c for _, c in top])
    ax.set_xticks(range(len(top)), [_label(k) for k, _ in top], rotation=90, fontsize=8)
    what = "characters" if stats.get("tokenizer") == "char" else "tokens"
    ax.set_title(f"most frequent {what} in train (vocab {stats['vocab_size']})")
    ax.set_ylabel("count")
    fig.tight_layout()
    return fig


def plot_document_lengths(lengths: list[int]):
    """A histogram of document lengths in characters (log counts: most are short, a few long)."""
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.hist(lengths, bins=50, color="#333")
    ax.set_xlabel("characters per document")
    ax.set_ylabel("documents")
    ax.set_yscale("log")
    median = sorted(lengths)[len(lengths) // 2] if lengths else 0
    ax.set_title(f"{len(lengths):,} documents, median {median:,} characters")
    fig.tight_layout()
    return fig


def show_window(tokenizer, tokens, start: int = 1000, stop: int = 1400) -> None:
    """Print tokens[start:stop] decoded: text exactly as the model sees it, separators included."""
    print(tokenizer.decode(tokens[start:stop]))


def show_tokens(tokenizer, line: str) -> None:
    """Print how the tokenizer cuts `line`: the count, then each token's text between bars."""
    ids = tokenizer.encode(line)
    print(f"{len(line)} characters -> {len(ids)} tokens")
    print(" | ".join(tokenizer.decode([i]) for i in ids))
