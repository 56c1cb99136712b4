"""Tokenizers: round trips, unknown characters, GPT-2 BPE offline from the mirror."""

import pytest

from atomlib.paths import tokenizer_mirror
from atomlib.data.tokenizer import CharTokenizer, GPT2Tokenizer, load_tokenizer

TEXT = "Deep into that darkness peering,\nlong I stood there wondering, fearing!\n\n"


def test_char_round_trip():
    tok = CharTokenizer(sorted(set(TEXT)))
    ids = tok.encode(TEXT)
    assert len(ids) == len(TEXT) and max(ids) < tok.vocab_size
    assert tok.decode(ids) == TEXT


def test_char_unknown_characters_never_crash():
    tok = CharTokenizer(list("abcdefghijklmnopqrstuvwxyz ?"))
    # accents fall back to their base letter, the rest to '?'
    assert tok.decode(tok.encode("café")) == "cafe"
    assert tok.decode(tok.encode("fire 🔥 Ω")) == "fire ? ?"
    assert tok.decode(tok.encode("ﬁre")) == "fire"  # ligature -> its letters
    assert tok.encode("") == []


def test_char_fallback_without_question_mark():
    tok = CharTokenizer(list("ab "))
    assert tok.decode(tok.encode("a☠b")) == "a b"


def test_load_tokenizer_from_meta():
    tok = CharTokenizer(list("xyz"))
    again = load_tokenizer(tok.meta())
    assert again.chars == tok.chars and again.vocab_size == 3


@pytest.mark.skipif(tokenizer_mirror() is None, reason="no GPT-2 BPE mirror folder (../shared/tokenizers/gpt2)")
def test_gpt2_offline_matches_tiktoken_reference_ids():
    tok = GPT2Tokenizer()
    assert tok.vocab_size == 50257 and tok.eot_token == 50256
    assert tok.encode("Hello world, darkness falls") == [15496, 995, 11, 11854, 8953]
    assert tok.encode(" The raven croaked: Nevermore!\n\nIn Hell's abyss") == [
        383, 37735, 6763, 4335, 25, 7236, 3549, 0, 198, 198, 818, 5783, 338, 37678]
    text = "Fire and steel — ünïcödé ☠ too\n"
    assert tok.decode(tok.encode(text)) == text
    assert load_tokenizer({"tokenizer": "gpt2"}).vocab_size == 50257
