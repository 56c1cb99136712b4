"""One interface over two tokenizers: a character vocabulary and GPT-2's BPE (tiktoken).

Both have `encode(str) -> list[int]`, `decode(list[int]) -> str`, `vocab_size`, `kind`
and `eot_token`, and both are rebuilt from a dataset's meta.json, so a run never needs
the corpus again to turn tokens back into text.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

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


def load_tokenizer(meta: dict):
    """Rebuild the tokenizer a dataset or run was made with from its meta dict."""
    kind = meta.get("tokenizer")
    if kind == "char":
        return CharTokenizer(meta["chars"])
    if kind == "gpt2":
        return GPT2Tokenizer()
    raise AtomError(f"unknown tokenizer '{kind}' in meta.json; expected 'char' or 'gpt2'.")


@lru_cache(maxsize=1)
def _gpt2_encoding():
    import tiktoken

    folder = tokenizer_mirror()
    if folder is not None and (folder / "vocab.bpe").is_file() and (folder / "encoder.json").is_file():
        # Offline: build the same Encoding tiktoken would, from the two local BPE files.
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        ranks = data_gym_to_mergeable_bpe_ranks(str(folder / "vocab.bpe"), str(folder / "encoder.json"))
        return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                 special_tokens={GPT2_EOT: 50256}, explicit_n_vocab=50257)
    try:
        return tiktoken.get_encoding("gpt2")  # downloads (and caches) the BPE files
    except Exception as e:
        raise AtomError(f"could not load GPT-2's BPE files ({type(e).__name__}); with no network, set "
                        "ATOM_TOKENIZER_MIRROR to a folder holding encoder.json and vocab.bpe.") from None
