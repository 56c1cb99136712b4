"""Make the default dataset exist: fetch -> clean -> prepare, each skipped when already done.

`make demo`, the notebooks and `notebook.ensure_run` all need `data/processed/darkverse`
(the public-domain corpus, char-level) or a BPE twin (GPT-2's, or one trained on the corpus,
`darkverse-bpe`); this builds it from the mirror
folder or the network with the same three pipeline functions the CLI exposes. `corpus_inputs`
names what the corpus is cleaned from: the default works, and what notebook 01 adds to them.
"""

from __future__ import annotations

from pathlib import Path

from atomlib.data.clean import clean
from atomlib.data.prepare import prepare, resolve_dataset
from atomlib.data.scrape import DEFAULT_BASE_URL, format_summary, scrape_darklyrics
from atomlib.data.sources import fetch
from atomlib.paths import data_dir

# name -> tokenizer; all are built from the cleaned dark-verse corpus, except shakespeare-char:
# tiny Shakespeare as nanoGPT uses it (the benchmark text of `atom race`)
DEFAULT_DATASETS = {"darkverse": "char", "darkverse-gpt2": "gpt2", "darkverse-bpe": "bpe", "shakespeare-char": "char"}


def corpus_inputs(artists=(), base_url: str = DEFAULT_BASE_URL, delay: float = 3.0, local_inputs=(),
                  include_shakespeare: bool = False, progress: bool = True) -> list[Path]:
    """What the corpus is cleaned from: the fetched dark-verse works; tiny Shakespeare when asked
    (fetched as a benchmark text, not part of the dark verse); the DarkLyrics songs of `artists`,
    scraped now (a re-run fetches nothing it already has; none when empty); then `local_inputs`."""
    inputs = [data_dir("raw") / "public_domain" / "gutenberg"]
    if include_shakespeare:
        inputs.append(data_dir("raw") / "public_domain" / "tinyshakespeare")
    if artists:
        summary = scrape_darklyrics(artists=artists, base_url=base_url, delay=delay, progress=progress)
        print(format_summary(summary))
        inputs.append(Path(summary["out"]))
    return inputs + [Path(p) for p in local_inputs]


def ensure_corpus(progress: bool = True) -> Path:
    """data/interim/corpus.jsonl from the public-domain corpus (fetch + clean), reusing what exists."""
    corpus = data_dir("interim") / "corpus.jsonl"
    if not corpus.is_file():
        fetch(progress=progress)
        clean(corpus_inputs(progress=progress), out=corpus, progress=progress)
    return corpus


def ensure_dataset(name: str = "darkverse", progress: bool = True) -> Path:
    """data/processed/<name> for the default datasets; other names must already be prepared."""
    folder = data_dir("processed") / name
    if name in DEFAULT_DATASETS and not (folder / "meta.json").is_file():
        corpus = ensure_corpus(progress)
        if name == "shakespeare-char":
            corpus = data_dir("raw") / "public_domain" / "tinyshakespeare" / "input.txt"
        prepare(corpus, tokenizer=DEFAULT_DATASETS[name], name=name, progress=progress)
    return resolve_dataset(name)
