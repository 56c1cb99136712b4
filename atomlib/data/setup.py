"""Make the default dataset exist: fetch -> clean -> prepare, each skipped when already done.

`make demo`, the notebooks and `notebook.ensure_run` all need `data/processed/darkverse`
(the public-domain corpus, char-level) or a BPE twin (GPT-2's, or one trained on the corpus,
`darkverse-bpe`); this builds it from the mirror
folder or the network with the same three pipeline functions the CLI exposes.
"""

from __future__ import annotations

from pathlib import Path

from atomlib.paths import interim_dir, processed_dir, raw_dir

# name -> tokenizer; all are built from the cleaned dark-verse corpus, except shakespeare-char:
# tiny Shakespeare as nanoGPT uses it (the benchmark text of `atom race`)
DEFAULT_DATASETS = {"darkverse": "char", "darkverse-gpt2": "gpt2", "darkverse-bpe": "bpe", "shakespeare-char": "char"}


def ensure_corpus(progress: bool = True) -> Path:
    """data/interim/corpus.jsonl from the public-domain corpus (fetch + clean), reusing what exists."""
    from atomlib.data.clean import clean
    from atomlib.data.sources import fetch

    corpus = interim_dir() / "corpus.jsonl"
    if not corpus.is_file():
        fetch(progress=progress)
        # the dark-verse works; tinyshakespeare (also fetched) is a benchmark text, not part of it
        clean([raw_dir() / "public_domain" / "gutenberg"], out=corpus, progress=progress)
    return corpus


def ensure_dataset(name: str = "darkverse", progress: bool = True) -> Path:
    """data/processed/<name> for the default datasets; other names must already be prepared."""
    from atomlib.data.prepare import prepare, resolve_dataset

    folder = processed_dir() / name
    if name in DEFAULT_DATASETS and not (folder / "meta.json").is_file():
        corpus = ensure_corpus(progress)
        if name == "shakespeare-char":
            corpus = raw_dir() / "public_domain" / "tinyshakespeare" / "input.txt"
        prepare(corpus, tokenizer=DEFAULT_DATASETS[name], name=name, progress=progress)
    return resolve_dataset(name)
