"""atomlib.paths: the offline mirrors, and the file primitives every stage writes with."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from atomlib import paths


def test_atomic_file_replaces_the_whole_file_and_syncs_before_the_rename(tmp_path, monkeypatch):
    target = tmp_path / "deep" / "corpus.jsonl"
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b)))
    with paths.atomic_file(target, "w", encoding="utf-8") as f:
        f.write("première ligne\n")
        assert not target.exists()  # nothing is visible until the block ends
    assert target.read_text(encoding="utf-8") == "première ligne\n"
    assert calls[:2] == ["fsync", "replace"]  # the data is on disk before the name points at it
    assert [p.name for p in target.parent.iterdir()] == ["corpus.jsonl"]


def test_atomic_file_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "train.bin"
    paths.write_atomic(target, b"old")
    with pytest.raises(RuntimeError):
        with paths.atomic_file(target) as f:
            f.write(b"half of the new")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["train.bin"]  # no temporary file left


def test_sha256_file_matches_hashlib(tmp_path):
    data = os.urandom(3 * (1 << 20) + 5)  # more than one block
    (tmp_path / "f").write_bytes(data)
    assert paths.sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_mirrors_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ATOM_MIRROR", str(tmp_path / "corpus"))
    monkeypatch.setenv("ATOM_TOKENIZER_MIRROR", str(tmp_path / "gpt2"))
    assert paths.corpus_mirror() == (tmp_path / "corpus").resolve()
    assert paths.tokenizer_mirror() == (tmp_path / "gpt2").resolve()
    monkeypatch.delenv("ATOM_MIRROR")
    monkeypatch.setenv("ATOM_HOME", str(tmp_path / "project"))  # no ../shared/corpus beside it
    assert paths.corpus_mirror() is None
    (tmp_path / "shared" / "corpus").mkdir(parents=True)
    assert paths.corpus_mirror() == Path(tmp_path / "shared" / "corpus").resolve()


def test_data_and_outputs_folders_come_from_the_project_root():
    root = paths.project_root()
    assert paths.data_dir() == root / "data" and paths.data_dir("raw") == root / "data" / "raw"
    assert paths.outputs_dir("runs") == root / "outputs" / "runs" and paths.outputs_dir() == root / "outputs"
    with pytest.raises(ValueError, match="data stage 'cooked'"):
        paths.data_dir("cooked")  # a typo must not become a new folder
