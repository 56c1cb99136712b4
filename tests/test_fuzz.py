"""Fuzzing (hypothesis): the config loader, the cleaner, the prompt classifier and the chat
commands take any input. Each either works or raises AtomError (one line for the user); nothing
else escapes. Commands that reach the network (/lmstudio, /enhance) or the file system (/save)
are left to their own tests: fuzzed URLs and paths could point anywhere."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomlib.generation import adaptive

from atomlib.data import clean
from atomlib.apps.session import ChatSession
from atomlib.config import load_config, parse_overrides
from atomlib.errors import AtomError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KEYS = ["n_layer", "n_head", "n_embd", "block_size", "learning_rate", "max_iters", "warmup_iters", "dtype",
        "optimizer", "pos_emb", "norm", "qk_norm", "mlp", "matrix_lr", "dataset", "eval_interval", "batch_size",
        "logit_softcap", "tie_embeddings", "dropout", "device", "compile", "init_from", "no_such_key"]
VALUES = st.one_of(st.text(max_size=12), st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(str),
                   st.sampled_from(["true", "false", "null", "[]", "{}", "1e999", "-0", "muon", "rope", "auto", "x=y"]))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=4), st.lists(st.text(max_size=20), max_size=2))
def test_config_overrides_work_or_raise_atom_error(pairs, junk):
    items = [f"{k}={v}" for k, v in pairs] + junk
    try:
        load_config("cpu", parse_overrides(items))
    except AtomError:
        pass


# text made of pieces the rules look for, so the fuzzer reaches their branches
NOISY = st.lists(st.sampled_from(list("abc XYZ\n\t[]()<>&;:#@./-_0123456789\"'\u00e9\u200b\ufeff\r\x00")
                                 + ["Lyrics by ", "Chorus", "http://", "4:57", "07. ", "album: ", "&amp;",
                                    "<br>", "*** START OF", "[Footnote 1: ", "Corrections ", "    "]),
                 max_size=120).map("".join)


@FUZZ
@given(st.one_of(st.text(max_size=400), NOISY))
def test_the_cleaner_takes_any_text(text):
    out, counts = clean.clean_text(text)
    assert isinstance(out, str) and set(counts) == {r.name for r in clean.RULES}
    assert all(isinstance(n, int) and n >= 0 for n in counts.values())


@FUZZ
@given(st.text(max_size=300))
def test_the_classifier_names_a_kind_for_any_prompt(text):
    assert adaptive.classify_prompt(text) in adaptive.KINDS


SAFE_COMMANDS = ["/temp", "/tokens", "/topp", "/repeat", "/help", "/status", "/settings", "/chat", "/complete",
                 "/completion", "/clear", "/h", "/?", "/nonsense", "/"]


@pytest.fixture
def session(loaded, tiny_run):
    model, tok, state = loaded
    return ChatSession(model, tok, state, run_dir=tiny_run, seed=7)


@FUZZ
@given(st.sampled_from(SAFE_COMMANDS), st.one_of(st.text(max_size=30), VALUES), st.sampled_from(["", " ", "  ", "\t"]))
def test_chat_commands_answer_any_argument(session, name, arg, sep):
    try:
        reply = session.send(f"{name}{sep}{arg}")
    except AtomError:
        return
    assert isinstance(reply.text, str)
    if reply.kind == "error":  # a bad argument is a one-line hint
        assert "\n" not in reply.text.strip(), reply.text
