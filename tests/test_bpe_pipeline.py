"""A run trained on a corpus BPE goes through every later stage: sampling (CLI and streaming),
evaluation with bits per character, completion mode, the filters and the chat."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from atomlib.model.checkpoint import load_run
from atomlib.config import load_config
from atomlib.data.prepare import load_meta, prepare
from atomlib.training.train import run
from conftest import atom_cmd


@pytest.fixture(scope="module")
def bpe_run(tiny_corpus, tmp_path_factory):
    import os

    os.environ.setdefault("ATOM_PEAK_FLOPS", "1e11")
    data = prepare(tiny_corpus, tokenizer="bpe", vocab_size=320, out_dir=tmp_path_factory.mktemp("bpe") / "ds",
                   val_fraction=0.2, seed=1, progress=False)
    cfg = load_config("test", {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 4,
                               "max_iters": 30, "eval_interval": 15, "eval_iters": 2, "warmup_iters": 2,
                               "dataset": str(data), "device": "cpu", "dtype": "float32", "optimizer": "muon",
                               "pos_emb": "rope", "norm": "rmsnorm", "tie_embeddings": False})
    return run(cfg, tmp_path_factory.mktemp("runs") / "bpe", progress=False)


def test_the_run_carries_its_tokenizer(bpe_run):
    state = json.loads((bpe_run / "state.json").read_text())
    assert state["tokenizer"]["tokenizer"] == "bpe" and state["tokenizer"]["vocab_size"] == 320
    assert state["tokenizer"]["bpe"]["model"]["type"] == "BPE"  # the whole tokenizer, not a reference
    assert "bpe" not in state["dataset_meta"]  # stored once
    model, tok, _ = load_run(bpe_run, device="cpu")
    assert tok.kind == "bpe" and tok.vocab_size == model.config.vocab_size == 320
    assert tok.decode(tok.encode("the raven, ☠")) == "the raven, ☠"


def test_sample_streams_text_from_the_cli(bpe_run):
    r = subprocess.run(atom_cmd("sample", "--run", bpe_run, "--prompt", "Upon the midnight", "--max-new-tokens", 20,
                                "--seed", 1), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Upon the midnight") and len(r.stdout) > len("Upon the midnight") + 5


def test_evaluation_reports_bits_per_character_in_characters(bpe_run):
    from atomlib.evaluation.evaluate import evaluate_run

    res = evaluate_run(bpe_run, num_samples=1, prompts_per_kind=1, max_new_tokens=16, completion_n=2,
                       relevance="tfidf", progress=False, write=False)
    meta = load_meta(res["settings"]["dataset"])
    assert res["chars_per_token"] == pytest.approx(meta["chars_per_token"]) and res["chars_per_token"] > 1.5
    assert res["bpc"] == pytest.approx(res["val_loss"] / math.log(2) / res["chars_per_token"])
    assert res["generation"]["known_word_rate"]["overall"] is not None
    assert res["generation"]["completion_lines"]["overall"] >= 1
    assert res["settings"]["tokenizer"] == "bpe"


def test_completion_filters_and_chat(bpe_run):
    from atomlib.apps.session import ChatSession
    from atomlib.generation.completion import complete_line, default_params
    from atomlib.generation.filters import apply_filters

    model, tok, state = load_run(bpe_run, device="cpu")
    assert default_params(tok).max_new_tokens == int(80 / tok.chars_per_token)  # a line's worth of tokens
    res = complete_line(model, tok, "Deep into that darkness", n=3, seed=2)
    assert len(res.candidates) == 3 and isinstance(res.best.text, str)
    assert apply_filters(res.best.raw or res.best.text, prompt="Deep into that darkness").stages
    session = ChatSession(model, tok, state, run_dir=bpe_run, seed=3)
    pieces = []
    reply = session.send("write a verse about the raven", on_token=pieces.append)
    assert reply.kind == "answer" and reply.text.strip()
    assert "".join(pieces).strip()  # it streamed
