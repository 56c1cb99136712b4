"""Shared fixtures: small datasets and runs made by the tests themselves, in temp folders."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# Tests never touch the user's data/ or outputs/: the repository's conftest.py points ATOM_HOME at
# a temporary project for the whole session (and checks those folders at the end); tests that
# write also pass explicit temp paths. Keep thread counts small on shared CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")

VERSE = """Upon the midnight, dreary, while I pondered, weak and weary,
Over many a quaint and curious volume of forgotten lore,
While I nodded, nearly napping, suddenly there came a tapping,
As of some one gently rapping, rapping at my chamber door.

Deep into that darkness peering, long I stood there wondering, fearing,
Doubting, dreaming dreams no mortal ever dared to dream before;
But the silence was unbroken, and the stillness gave no token,
And the only word there spoken was the whispered word, Lenore!

Of man's first disobedience, and the fruit
Of that forbidden tree whose mortal taste
Brought death into the world, and all our woe,
With loss of Eden, till one greater Man
Restore us, and regain the blissful seat.

Fire and steel and thunder, the night is burning under,
Shadows of the fallen kings are marching to the sea.
"""


def atom_cmd(*args) -> list[str]:
    """The `atom` console script of the environment running the tests."""
    return [str(VENV_BIN / "atom"), *map(str, args)]


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """A JSONL corpus of 24 short documents (verse stanzas with numbered variations)."""
    folder = tmp_path_factory.mktemp("corpus")
    stanzas = [s for s in VERSE.split("\n\n") if s.strip()]
    path = folder / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(24):
            text = stanzas[i % len(stanzas)].replace("night", ["night", "dark", "storm"][i % 3])
            f.write(json.dumps({"id": f"doc{i}", "source": "test", "title": f"Stanza {i}", "text": text}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_dataset(tiny_corpus, tmp_path_factory) -> Path:
    """A char-level dataset folder (train.bin, val.bin, meta.json) from tiny_corpus."""
    from atomlib.data.prepare import prepare

    return prepare(tiny_corpus, tokenizer="char", out_dir=tmp_path_factory.mktemp("data") / "tiny",
                   val_fraction=0.2, seed=1, progress=False)


@pytest.fixture(scope="session")
def tiny_run(tiny_dataset, tmp_path_factory) -> Path:
    """A run folder holding a small randomly initialised char model, saved as the trainer saves."""
    import torch

    from atomlib.model.checkpoint import save_checkpoint
    from atomlib.config import load_config
    from atomlib.model.gpt import GPT, GPTConfig
    from atomlib.data.prepare import load_meta

    meta = load_meta(tiny_dataset)
    torch.manual_seed(0)
    cfg = load_config("test", {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 64,
                               "dataset": str(tiny_dataset), "max_iters": 10, "warmup_iters": 0})
    mcfg = GPTConfig(block_size=64, vocab_size=meta["vocab_size"], n_layer=2, n_head=2, n_embd=32,
                     dropout=0.0, bias=False)
    model = GPT(mcfg)
    run = tmp_path_factory.mktemp("runs") / "tiny"
    save_checkpoint(run, model, {"step": 0, "config": cfg.to_dict(), "model_config": dataclasses.asdict(mcfg),
                                 "best_val_loss": None, "tokenizer": {k: meta[k] for k in ("tokenizer", "vocab_size", "chars")},
                                 "dataset_meta": meta})
    return run


@pytest.fixture(scope="module")
def loaded(tiny_run):
    """(model, tokenizer, state) of tiny_run, loaded once per test module."""
    from atomlib.model.checkpoint import load_run

    return load_run(tiny_run, device="cpu")


@pytest.fixture(autouse=True)
def no_user_chat_config(monkeypatch):
    """Tests never read the developer's own ~/.config/atom/chat.yaml or LM Studio URL."""
    monkeypatch.setenv("ATOM_CHAT_CONFIG", str(ROOT / "tests" / "no-such-chat-config.yaml"))
    monkeypatch.delenv("ATOM_LMSTUDIO_URL", raising=False)
