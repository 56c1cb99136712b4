"""One interface over three tokenizers: characters, GPT-2's BPE (tiktoken), and a byte-level
BPE trained on the corpus itself (Hugging Face tokenizers).

All have `encode(str) -> list[int]`, `decode(list[int]) -> str`, `vocab_size`, `kind`,
`eot_token` and `chars_per_token` (a typical ratio, for sizing generations in characters), and
all are rebuilt from a dataset's meta.json or a run's state.json, so a run never needs the
corpus again to turn tokens back into text. A corpus BPE is stored whole in those files.
"""

from __future__ import annotations

import json
import unicodedata
from functools import lru_cache
from typing import Iterable

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from atomlib.errors import AtomError
from atomlib.paths import tokenizer_mirror

# GPT-2's pre-tokenisation pattern and special token, as tiktoken defines the "gpt2" encoding.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_EOT = "<|endoftext|>"


class CharTokenizer:
    """Each character of the training corpus is one token.

    A character the vocabulary lacks never crashes encode(): it is first reduced to its
    base letters (NFKD, dropping accents: 'é' -> 'e', 'ﬁ' -> 'fi'); what still is unknown
    becomes the fallback character ('?' if the corpus has it, else ' ', else token 0).
    """

    kind = "char"
    eot_token = None
    chars_per_token = 1.0

    def __init__(self, chars: list[str] | str):
        self.chars = sorted(set(chars))
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars)
        self.fallback = next((self.stoi[c] for c in ("?", " ") if c in self.stoi), 0)

    def encode(self, text: str) -> list[int]:
        stoi, out = self.stoi, []
        for c in text:
            i = stoi.get(c)
            if i is not None:
                out.append(i)
                continue
            for d in unicodedata.normalize("NFKD", c):
                j = stoi.get(d)
                if j is not None:
                    out.append(j)
                elif not unicodedata.combining(d):
                    out.append(self.fallback)
        return out

    def decode(self, ids) -> str:
        chars = self.chars
        return "".join(chars[int(i)] for i in ids if 0 <= int(i) < len(chars))

    def meta(self) -> dict:
        return {"tokenizer": "char", "vocab_size": self.vocab_size, "chars": self.chars}


class GPT2Tokenizer:
    """GPT-2's byte-level BPE through tiktoken; offline from a mirror folder when there is one."""

    kind = "gpt2"
    chars_per_token = 4.0  # English prose; dark verse measures 3.4

    def __init__(self):
        self.enc = _gpt2_encoding()
        self.vocab_size = self.enc.n_vocab  # 50257
        self.eot_token = self.enc.eot_token  # 50256

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.enc.encode_ordinary_batch(texts)

    def decode(self, ids) -> str:
        return self.enc.decode([int(i) for i in ids])

    def meta(self) -> dict:
        return {"tokenizer": "gpt2", "vocab_size": self.vocab_size}


class BPETokenizer:
    """A byte-level BPE trained on the corpus: GPT-2's pre-tokenisation (the same regex, bytes
    mapped to printable characters) with merges learnt from this corpus, so a small vocabulary
    covers its words. Any text encodes (every byte is in the vocabulary); <|endoftext|> is the
    document separator."""

    kind = "bpe"

    def __init__(self, spec: dict | str, chars_per_token: float | None = None):
        self.spec = json.loads(spec) if isinstance(spec, str) else spec
        self.tok = Tokenizer.from_str(json.dumps(self.spec))
        self.vocab_size = self.tok.get_vocab_size()
        self.eot_token = self.tok.token_to_id(GPT2_EOT)
        self.chars_per_token = chars_per_token or 3.0

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def meta(self) -> dict:
        return {"tokenizer": "bpe", "vocab_size": self.vocab_size, "bpe": self.spec,
                "bpe_chars_per_token": self.chars_per_token}


def train_bpe(texts: Iterable[str], vocab_size: int) -> BPETokenizer:
    """Learn a byte-level BPE of vocab_size tokens (256 bytes, <|endoftext|>, merges) from texts."""
    if not MIN_BPE_VOCAB <= vocab_size <= MAX_BPE_VOCAB:
        raise AtomError(f"--vocab-size {vocab_size} must be between {MIN_BPE_VOCAB} (the 256 bytes and "
                        f"<|endoftext|>) and {MAX_BPE_VOCAB}.")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's split, bytes as characters
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[GPT2_EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return BPETokenizer(tok.to_str())


MIN_BPE_VOCAB, MAX_BPE_VOCAB = 257, 65535  # all bytes + the separator; ids that fit uint16
TOKENIZER_KEYS = ("tokenizer", "vocab_size", "chars", "bpe", "bpe_chars_per_token")  # what rebuilds one


def tokenizer_meta(meta: dict) -> dict:
    """The part of a dataset's meta.json that rebuilds its tokenizer (what a run stores)."""
    return {k: meta[k] for k in TOKENIZER_KEYS if k in meta}


def load_tokenizer(meta: dict):
    """Rebuild the tokenizer a dataset or run was made with from its meta dict."""
    kind = meta.get("tokenizer")
    if kind == "char":
        return CharTokenizer(meta["chars"])
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "bpe":
        try:
            return BPETokenizer(meta["bpe"], meta.get("bpe_chars_per_token"))
        except Exception as e:  # a missing key, bad JSON, or a spec tokenizers rejects
            raise AtomError(f"the corpus BPE stored in meta.json / state.json is unreadable ({type(e).__name__}); "
                            "prepare the dataset again.") from None
    raise AtomError(f"unknown tokenizer '{kind}' in meta.json; expected 'char', 'gpt2' or 'bpe'.")


@lru_cache(maxsize=1)
def _gpt2_encoding():
    folder = tokenizer_mirror()
    if folder is not None and (folder / "vocab.bpe").is_file() and (folder / "encoder.json").is_file():
        # Offline: build the same Encoding tiktoken would, from the two local BPE files.
        ranks = data_gym_to_mergeable_bpe_ranks(str(folder / "vocab.bpe"), str(folder / "encoder.json"))
        return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                 special_tokens={GPT2_EOT: 50256}, explicit_n_vocab=50257)
    try:
        return tiktoken.get_encoding("gpt2")  # downloads (and caches) the BPE files
    except Exception as e:
        raise AtomError(f"could not load GPT-2's BPE files ({type(e).__name__}); with no network, set "
                        "ATOM_TOKENIZER_MIRROR to a folder holding encoder.json and vocab.bpe.") from None
