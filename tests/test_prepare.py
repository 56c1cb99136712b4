"""prepare: by-document split without leakage, reproducible, streamed, memory-mapped."""

import hashlib
import json
import resource
import subprocess
import sys

import numpy as np
import pytest

from atomlib.errors import AtomError
from atomlib.paths import corpus_mirror
from atomlib.data import views
from atomlib.data.prepare import (dataset_stats, dataset_tokenizer, document_lengths, iter_documents, load_meta,
                                  load_tokens, prepare, resolve_dataset, split_long)
from atomlib.data.tokenizer import CharTokenizer
from conftest import atom_cmd


def _write_corpus(path, n=50):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            # every document is unique, so any shared line would reveal leakage
            text = f"Poem number {i} begins in shadow.\nIts line {i * 7} ends in flame {i}."
            f.write(json.dumps({"id": f"d{i}", "source": "t", "title": f"P{i}", "text": text}) + "\n")
    return path


def _docs(folder, split):
    meta = load_meta(folder)
    from atomlib.data.tokenizer import load_tokenizer

    text = load_tokenizer(meta).decode(load_tokens(folder, split))
    return {d for d in text.split(meta["doc_separator"]) if d}


def test_split_is_by_document_and_has_no_leakage(tmp_path):
    corpus = _write_corpus(tmp_path / "c.jsonl")
    out = prepare(corpus, out_dir=tmp_path / "ds", val_fraction=0.2, seed=3, progress=False)
    train, val = _docs(out, "train"), _docs(out, "val")
    assert train and val
    assert not train & val
    assert len(train) + len(val) == 50
    meta = load_meta(out)
    assert meta["train_docs"] == len(train) and meta["val_docs"] == len(val)
    assert meta["train_tokens"] == len(load_tokens(out, "train"))


def test_split_is_reproducible_and_seeded(tmp_path):
    corpus = _write_corpus(tmp_path / "c.jsonl")
    a = prepare(corpus, out_dir=tmp_path / "a", seed=5, progress=False)
    b = prepare(corpus, out_dir=tmp_path / "b", seed=5, progress=False)
    c = prepare(corpus, out_dir=tmp_path / "c", seed=6, progress=False)
    assert (a / "val.bin").read_bytes() == (b / "val.bin").read_bytes()
    assert _docs(a, "val") != _docs(c, "val")


def test_one_long_text_is_cut_into_documents_and_still_splits(tmp_path):
    paras = [f"Stanza {i}: the bells, the bells,\nthe tolling of the bells {i}." for i in range(400)]
    txt = tmp_path / "input.txt"
    txt.write_text("\r\n\r\n".join(paras).replace("\n", "\r\n"), encoding="utf-8")
    docs = list(iter_documents(txt))
    assert len(docs) > 10 and all("\r" not in d for d in docs)
    out = prepare(txt, out_dir=tmp_path / "ds", progress=False)
    assert _docs(out, "train") and _docs(out, "val")


def test_split_long_keeps_short_texts_whole():
    assert list(split_long("one\n\ntwo")) == ["one\n\ntwo"]
    pieces = list(split_long("\n\n".join(["x" * 100] * 50), size=500))
    assert all(len(p) <= 600 for p in pieces) and "".join(pieces).count("x") == 5000


def test_dtype_and_memmap(tmp_path):
    out = prepare(_write_corpus(tmp_path / "c.jsonl"), out_dir=tmp_path / "ds", progress=False)
    meta = load_meta(out)
    assert meta["dtype"] == "uint16" and meta["tokenizer"] == "char"
    arr = load_tokens(out, "train")
    assert isinstance(arr, np.memmap) and arr.dtype == np.uint16
    assert (out / "train.bin").stat().st_size == 2 * len(arr)
    assert len(meta["corpus_sha256"]) == 64 and meta["chars_per_token"] == pytest.approx(1.0)
    assert meta["corpus_sha256"] == hashlib.sha256((tmp_path / "c.jsonl").read_bytes()).hexdigest()
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]  # no temporary file left


def test_a_failed_prepare_leaves_no_half_written_split(tmp_path, monkeypatch):
    out = prepare(_write_corpus(tmp_path / "c.jsonl"), out_dir=tmp_path / "ds", progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    encode, calls = CharTokenizer.encode, []

    def encode_then_fail(self, text):  # the 20th document dies, with both splits begun
        calls.append(text)
        if len(calls) > 20:
            raise RuntimeError("killed mid-way")
        return encode(self, text)

    monkeypatch.setattr(CharTokenizer, "encode", encode_then_fail)
    with pytest.raises(RuntimeError):
        prepare(_write_corpus(tmp_path / "c2.jsonl", n=60), out_dir=out, progress=False)
    assert len(calls) == 21  # it failed while writing, not before
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old dataset, whole


def test_views_of_a_prepared_dataset(tmp_path, capsys):
    out = prepare(_write_corpus(tmp_path / "c.jsonl"), out_dir=tmp_path / "ds", progress=False)
    stats = dataset_stats(out)
    table = views.split_table(stats)
    assert list(table.index) == ["train", "val"] and table["documents"].sum() == 50
    assert "chars" not in views.meta_summary(load_meta(out)) and views.meta_summary(load_meta(out))["name"] == "ds"
    fig = views.plot_top_tokens(stats, n=10)
    assert len(fig.axes[0].patches) == 10 and "characters" in fig.axes[0].get_title()
    lengths = document_lengths(tmp_path / "c.jsonl")
    assert str(len(lengths)) in views.plot_document_lengths(lengths).axes[0].get_title()
    tok = dataset_tokenizer(out)
    views.show_window(tok, load_tokens(out, "train"), 0, 20)
    assert capsys.readouterr().out.startswith("Poem number")
    views.show_tokens(tok, "ash")
    assert capsys.readouterr().out == "3 characters -> 3 tokens\na | s | h\n"


def test_gpt2_tokenizer_dataset(tmp_path):
    out = prepare(_write_corpus(tmp_path / "c.jsonl", n=10), tokenizer="gpt2", out_dir=tmp_path / "g", progress=False)
    meta = load_meta(out)
    assert meta["vocab_size"] == 50257 and meta["dtype"] == "uint16"
    assert 50256 in set(load_tokens(out, "train").tolist())  # documents end with <|endoftext|>
    assert meta["chars_per_token"] > 2


# --- a BPE trained on the corpus ----------------------------------------------------------------


def _verse_corpus(path, n=60):
    words = ("night fire steel raven shadow thunder grave moon blood cold iron crown dark sea wolf ash").split()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            lines = [" ".join(words[(i * 3 + j * 5 + k) % len(words)] for k in range(6)) for j in range(6)]
            text = f"Song {i}: the {words[i % len(words)]}\n" + "\n".join(lines) + "\nÉlan — ünïcode ☠\n"
            f.write(json.dumps({"id": f"d{i}", "source": "t", "title": f"S{i}", "text": text}) + "\n")
    return path


def test_bpe_is_trained_on_the_train_split_and_round_trips(tmp_path):
    from atomlib.data.tokenizer import BPETokenizer, load_tokenizer

    corpus = _verse_corpus(tmp_path / "c.jsonl")
    out = prepare(corpus, tokenizer="bpe", vocab_size=300, out_dir=tmp_path / "bpe", val_fraction=0.2, seed=3,
                  progress=False)
    meta = load_meta(out)
    tok = load_tokenizer(meta)
    assert isinstance(tok, BPETokenizer) and meta["tokenizer"] == "bpe" and tok.vocab_size == meta["vocab_size"] == 300
    # the same documents in each split as the char tokenizer's, so their bits per character compare
    char = prepare(corpus, tokenizer="char", out_dir=tmp_path / "char", val_fraction=0.2, seed=3, progress=False)
    assert _docs(out, "val") == _docs(char, "val") and _docs(out, "train") == _docs(char, "train")
    # any text round-trips, including characters the corpus never had
    for text in ("the raven and the moon", "Ωmega ☠ 🜏 naïve\n\n  indented", ""):
        assert tok.decode(tok.encode(text)) == text
    # merges were learnt: corpus words take few tokens, and fewer tokens than characters overall
    assert len(tok.encode(" thunder")) <= 2
    assert meta["chars_per_token"] > 1.5 and tok.chars_per_token == pytest.approx(meta["chars_per_token"], abs=1e-3)
    assert tok.eot_token in set(load_tokens(out, "train").tolist())  # documents end with <|endoftext|>


def test_bpe_learns_only_from_the_train_split(tmp_path, monkeypatch):
    from atomlib.data import prepare as prep

    seen = []
    real = prep.train_bpe

    def recording(texts, vocab_size):
        texts = list(texts)
        seen.extend(texts)
        return real(texts, vocab_size)

    monkeypatch.setattr(prep, "train_bpe", recording)
    out = prepare(_verse_corpus(tmp_path / "c.jsonl", n=40), tokenizer="bpe", vocab_size=300, out_dir=tmp_path / "bpe",
                  val_fraction=0.3, seed=1, progress=False)
    assert set(seen) == _docs(out, "train") and not set(seen) & _docs(out, "val")


def test_bpe_vocab_size_is_checked(tmp_path):
    corpus = _verse_corpus(tmp_path / "c.jsonl", n=10)
    with pytest.raises(AtomError, match="vocab-size 100 must be between 257"):
        prepare(corpus, tokenizer="bpe", vocab_size=100, out_dir=tmp_path / "x", progress=False)
    with pytest.raises(AtomError, match="--vocab-size is the size of a corpus BPE"):
        prepare(corpus, tokenizer="char", vocab_size=500, out_dir=tmp_path / "y", progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_bits_per_character_agree_across_tokenizers(tmp_path):
    """bpc = nats per token / ln 2 / characters per token: the same text costs the same bits
    whatever the tokens. A model that knows nothing (uniform over the vocabulary) sits at
    log2(V) bits per token; in characters that is log2(V) / chars_per_token for every tokenizer."""
    import math

    from atomlib.evaluation.char_ngrams import bits_per_char

    corpus = _verse_corpus(tmp_path / "c.jsonl")
    for kind, extra in (("char", {}), ("bpe", {"vocab_size": 320})):
        out = prepare(corpus, tokenizer=kind, out_dir=tmp_path / kind, val_fraction=0.2, seed=3, progress=False, **extra)
        meta = load_meta(out)
        chars = sum(len(d) for d in _docs(out, "val"))
        cpt = meta["chars_per_token"]
        # chars_per_token counts the val split's characters (char: with its separators) per token
        assert meta["val_chars"] == pytest.approx(chars + (3 * meta["val_docs"] if kind == "char" else 0))
        uniform = math.log(meta["vocab_size"])
        assert bits_per_char(uniform, cpt) == pytest.approx(math.log2(meta["vocab_size"]) / cpt)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(AtomError, match="missing.jsonl"):
        prepare(tmp_path / "missing.jsonl", out_dir=tmp_path / "x")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(AtomError, match="bad.jsonl line 1"):
        prepare(bad, out_dir=tmp_path / "y", progress=False)
    with pytest.raises(AtomError, match="train.bin"):
        resolve_dataset(tmp_path / "nowhere")


def test_cli_missing_corpus_is_one_line_exit_2(tmp_path):
    r = subprocess.run(atom_cmd("prepare", "--corpus", tmp_path / "nope.jsonl", "--name", "x", "--out", tmp_path / "o"),
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "nope.jsonl" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(corpus_mirror() is None, reason="no corpus mirror (../shared/corpus)")
def test_full_mirror_streams_in_bounded_memory(tmp_path):
    """The whole mirror (about 10 MB of text) prepared in a child process stays below 1 GiB."""
    files = sorted(corpus_mirror().rglob("*.txt"))
    corpus = tmp_path / "all.txt"
    with open(corpus, "w", encoding="utf-8") as f:
        for p in files:
            f.write(p.read_text(encoding="utf-8") + "\n\n")
    code = (f"from atomlib.data.prepare import prepare; prepare({str(corpus)!r}, out_dir={str(tmp_path / 'ds')!r}, progress=False)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-c", code], check=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert max(before, peak_kib) < 1024 * 1024
    assert load_meta(tmp_path / "ds")["train_tokens"] > 8_000_000
