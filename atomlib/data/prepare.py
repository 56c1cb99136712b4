"""Corpus -> token arrays: data/processed/<name>/{train.bin, val.bin, meta.json}.

The split is by document, so no song or poem lands in both train and val; it is seeded
and reproducible, and the same for every tokenizer (so their bits per character compare).
A document longer than a few paragraphs (a whole Gutenberg book, or tinyshakespeare's
single input.txt) is first cut at blank lines into paragraph-sized pieces, so even one long
text still splits. Documents are streamed through (split and vocabulary, then tokens) and
written straight to disk, so memory stays flat whatever the corpus size. A corpus BPE
(tokenizer "bpe") is trained on the train split only, in one more pass between the two.
"""

from __future__ import annotations

import json
import random
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from atomlib.errors import AtomError
from atomlib.paths import atomic_file, data_dir, sha256_file, write_atomic
from atomlib.data.tokenizer import CharTokenizer, GPT2Tokenizer, load_tokenizer, train_bpe

CHUNK_CHARS = 2000  # documents longer than this are cut at blank lines into pieces of about this size
CHAR_SEPARATOR = "\n\n\n"  # cleaning never leaves 3 newlines inside a document, so this marks a boundary


TOKENIZERS = ("char", "gpt2", "bpe")
DEFAULT_BPE_VOCAB = 1024  # what trained the best small model here (README, Time to quality)


def prepare(corpus, tokenizer: str = "char", name: str | None = None, out_dir=None,
            val_fraction: float = 0.1, seed: int = 1337, vocab_size: int | None = None,
            progress: bool = True) -> Path:
    """Tokenize a corpus (JSONL with a `text` field, or a plain .txt) into train/val .bin files.
    vocab_size: the size of a corpus BPE (tokenizer "bpe"; default DEFAULT_BPE_VOCAB)."""
    corpus = Path(corpus)
    _check_arguments(corpus, tokenizer, val_fraction, vocab_size)
    out = Path(out_dir) if out_dir else data_dir("processed") / (name or corpus.stem)
    # Pass 1: each document's split (seeded); then the tokenizer (a corpus BPE learns from train).
    splits = split_assignment(iter_documents(corpus), val_fraction, seed)
    if not splits:
        raise AtomError(f"corpus file {corpus} holds no documents with text.")
    tok, sep = _build_tokenizer(corpus, tokenizer, splits, vocab_size, progress)
    dtype = np.uint16 if tok.vocab_size <= 2**16 else np.uint32
    # Pass 2: encode each document and append it to its split's .bin.
    sep_chars = len(CHAR_SEPARATOR) if tokenizer == "char" else 0
    counts = _write_splits(corpus, splits, tok, sep, sep_chars, dtype, out, progress)
    cpt = counts["val"]["chars"] / max(1, counts["val"]["tokens"])
    if tokenizer == "bpe":
        tok.chars_per_token = round(cpt, 3)
    meta = {
        **tok.meta(),
        "dtype": np.dtype(dtype).name,
        "doc_separator": CHAR_SEPARATOR if tokenizer == "char" else "<|endoftext|>",
        **{f"{s}_{k}": v for s, c in counts.items() for k, v in c.items()},
        "chars_per_token": cpt,
        "val_fraction": val_fraction,
        "seed": seed,
        "corpus": str(corpus),
        "corpus_sha256": sha256_file(corpus),
        "name": out.name,
    }
    write_atomic(out / "meta.json", json.dumps(meta, indent=1, ensure_ascii=False).encode("utf-8"))
    if progress:
        print(f"prepared {out}: train {counts['train']['tokens']:,} tokens ({counts['train']['docs']} docs), "
              f"val {counts['val']['tokens']:,} tokens ({counts['val']['docs']} docs), vocab {tok.vocab_size}")
    return out


def _check_arguments(corpus: Path, tokenizer: str, val_fraction: float, vocab_size: int | None) -> None:
    if not corpus.is_file():
        raise AtomError(f"corpus file {corpus} does not exist; run `atom clean` first or pass --corpus PATH.")
    if not 0.0 < val_fraction < 1.0:
        raise AtomError(f"--val-fraction {val_fraction} must be between 0 and 1 (exclusive).")
    if tokenizer not in TOKENIZERS:
        raise AtomError(f"--tokenizer '{tokenizer}' is not one of: {', '.join(TOKENIZERS)}.")
    if vocab_size is not None and tokenizer != "bpe":
        raise AtomError(f"--vocab-size is the size of a corpus BPE; the {tokenizer} tokenizer's is fixed.")


def _build_tokenizer(corpus: Path, tokenizer: str, splits: list[str], vocab_size: int | None, progress: bool):
    """(tokenizer, the ids that end each document): the corpus's characters plus the separator,
    GPT-2's BPE, or a BPE trained on the train split only (so val stays unseen)."""
    if tokenizer == "char":
        chars = set(CHAR_SEPARATOR)
        for text in iter_documents(corpus):
            chars.update(text)
        tok = CharTokenizer(sorted(chars))
        return tok, tok.encode(CHAR_SEPARATOR)
    if tokenizer == "gpt2":
        tok = GPT2Tokenizer()
        return tok, [tok.eot_token]
    train_docs = (t for t, s in zip(iter_documents(corpus), splits) if s == "train")
    if progress:
        print(f"training a byte-level BPE of {vocab_size or DEFAULT_BPE_VOCAB} tokens on the train split ...")
    tok = train_bpe(train_docs, vocab_size or DEFAULT_BPE_VOCAB)
    return tok, [tok.eot_token]


def _write_splits(corpus: Path, splits: list[str], tok, sep: list[int], sep_chars: int, dtype,
                  out: Path, progress: bool) -> dict:
    """Encode each document (then `sep`) onto the end of its split's .bin; both files appear whole
    or not at all. Returns {split: {"tokens", "chars", "docs"}}."""
    counts = {s: {"tokens": 0, "chars": 0, "docs": 0} for s in ("train", "val")}
    with ExitStack() as stack:
        files = {s: stack.enter_context(atomic_file(out / f"{s}.bin")) for s in ("train", "val")}
        docs = tqdm(iter_documents(corpus), total=len(splits), desc="prepare", unit="doc", disable=not progress)
        for text, split in zip(docs, splits):
            ids = tok.encode(text) + sep
            np.asarray(ids, dtype=dtype).tofile(files[split])
            c = counts[split]
            c["tokens"] += len(ids)
            c["chars"] += len(text) + sep_chars
            c["docs"] += 1
    return counts


def split_assignment(docs: Iterable[str], val_fraction: float, seed: int) -> list[str]:
    """"train" or "val" for each document, in order: one seeded draw per document, and at least one
    document in each split (the last one is moved when a split would be empty)."""
    rng = random.Random(seed)
    splits = ["val" if rng.random() < val_fraction else "train" for _ in docs]
    if splits and "val" not in splits:
        splits[-1] = "val"
    elif len(splits) > 1 and "train" not in splits:
        splits[-1] = "train"
    return splits


def iter_documents(corpus: Path) -> Iterator[str]:
    """Yield paragraph-sized document texts from a JSONL corpus (field `text`) or a .txt file."""
    if corpus.suffix == ".jsonl":
        with open(corpus, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line).get("text") or ""
                except (json.JSONDecodeError, AttributeError):
                    raise AtomError(f"{corpus} line {n} is not a JSON object; the corpus must be JSONL from `atom clean`.") from None
                yield from split_long(text)
    else:
        yield from split_long(corpus.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n"))


def split_long(text: str, size: int = CHUNK_CHARS) -> Iterator[str]:
    """Cut a long text at blank lines into pieces of about `size` characters (short texts pass whole)."""
    text = text.strip("\n")
    if not text.strip():
        return
    if len(text) <= size:
        yield text
        return
    piece = []
    n = 0
    for para in text.split("\n\n"):
        if piece and n + len(para) > size:
            yield "\n\n".join(piece)
            piece, n = [], 0
        piece.append(para)
        n += len(para) + 2
    if piece:
        yield "\n\n".join(piece)


# --- reading a prepared dataset ------------------------------------------------------------


def resolve_dataset(name_or_path) -> Path:
    """A dataset name under data/processed/, or a folder path, checked to hold the three files."""
    p = Path(name_or_path)
    folder = p if (p.is_absolute() or p.exists() or len(p.parts) > 1) else data_dir("processed") / str(name_or_path)
    for f in ("train.bin", "val.bin", "meta.json"):
        if not (folder / f).is_file():
            raise AtomError(f"dataset '{name_or_path}' is missing {folder / f}; run `atom prepare --name {p.name}` "
                            "or set dataset= to a folder holding train.bin, val.bin and meta.json.")
    return folder


def load_meta(folder) -> dict:
    path = Path(folder) / "meta.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise AtomError(f"{path} is unreadable ({type(e).__name__}); re-run `atom prepare`.") from None


def load_tokens(folder, split: str) -> np.memmap:
    """The token array of a split, memory-mapped (never read whole into memory)."""
    folder = Path(folder)
    meta = load_meta(folder)
    return np.memmap(folder / f"{split}.bin", dtype=np.dtype(meta.get("dtype", "uint16")), mode="r")


def dataset_tokenizer(folder):
    return load_tokenizer(load_meta(folder))


# --- statistics for notebook 02 -------------------------------------------------------------


def dataset_stats(folder) -> dict:
    """Sizes, vocabulary and character frequencies of a prepared dataset (read via memmap)."""
    folder = Path(folder)
    meta = load_meta(folder)
    tok = load_tokenizer(meta)
    stats = {k: meta.get(k) for k in ("tokenizer", "vocab_size", "train_tokens", "val_tokens", "train_docs",
                                       "val_docs", "train_chars", "val_chars", "chars_per_token")}
    train = load_tokens(folder, "train")
    counts = np.bincount(np.asarray(train[: 5_000_000]), minlength=tok.vocab_size)
    if meta["tokenizer"] == "char":
        stats["char_counts"] = {tok.chars[i]: int(c) for i, c in enumerate(counts) if c}
    else:
        top = np.argsort(counts)[::-1][:40]
        stats["token_counts"] = {tok.decode([int(i)]): int(counts[i]) for i in top if counts[i]}
    return stats


def document_lengths(corpus) -> list[int]:
    """Character length of each (paragraph-sized) document prepare would see."""
    return [len(t) for t in iter_documents(Path(corpus))]
