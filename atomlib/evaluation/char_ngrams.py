"""Character n-grams: the baseline language models and the relevance vectors.

- bits per character: nats per token / ln 2 / characters per token, the one number that compares
  a character model, a BPE model and the baselines below.
- CharNgramModel: a unigram or bigram character model fitted on the train split. Its val bpc and
  its samples (the same lengths and seeds as the model's) are the evaluation's noise baselines.
- relevance: cosine similarity of prompt and output vectors, TF-IDF of character 3-5-grams
  within words (`CharTfidf`, always available; `scoring.Relevance` prefers MiniLM embeddings
  when they are installed).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable

import numpy as np

_ALNUM_RE = re.compile(r"[^\W_]+")


# --- relevance: character n-gram TF-IDF ------------------------------------------------------


class CharTfidf:
    """Character n-gram TF-IDF vectors and their cosine, in plain Python.

    Text is lowercased and cut into words (runs of letters/digits); each word, padded with a
    space at each end, gives its character n-grams for n in n_range (scikit-learn's
    "char_wb": n-grams never span two words, so matches are about shared words and stems,
    not about " of the"). tf is the raw count; idf = ln((1 + N) / (1 + df)) + 1 over the N
    documents given to fit() (before fit every n-gram has idf 1; unseen ones get
    ln(1 + N) + 1). Vectors are L2-normalised, so the cosine is a dot product: identical
    texts score 1, texts sharing no n-gram score 0.
    """

    name = "tfidf-charwb3-5"

    def __init__(self, n_range: tuple[int, int] = (3, 5)):
        self.n_range = n_range
        self.idf: dict[str, float] = {}
        self.default_idf = 1.0

    def grams(self, text: str) -> Counter:
        c: Counter = Counter()
        lo, hi = self.n_range
        for w in _ALNUM_RE.findall(text.lower()):
            u = " " + w + " "
            for n in range(lo, hi + 1):
                c.update(u[i:i + n] for i in range(len(u) - n + 1))
        return c

    def fit(self, docs: Iterable[str]) -> "CharTfidf":
        df: Counter = Counter()
        n = 0
        for d in docs:
            df.update(set(self.grams(d)))
            n += 1
        self.idf = {g: math.log((1 + n) / (1 + k)) + 1.0 for g, k in df.items()}
        self.default_idf = math.log(1 + n) + 1.0 if n else 1.0
        return self

    def vector(self, text: str) -> dict[str, float]:
        v = {g: tf * self.idf.get(g, self.default_idf) for g, tf in self.grams(text).items()}
        norm = math.sqrt(sum(x * x for x in v.values()))
        return {g: x / norm for g, x in v.items()} if norm else {}

    def cosine(self, a: str, b: str) -> float:
        va, vb = self.vector(a), self.vector(b)
        if len(va) > len(vb):
            va, vb = vb, va
        return float(sum(x * vb.get(g, 0.0) for g, x in va.items()))


def tfidf_cosine(a: str, b: str, fit_on: Iterable[str] | None = None) -> float:
    """Cosine of the char 3-5-gram (within words) TF-IDF vectors of a and b (idf from fit_on, else a and b)."""
    return CharTfidf().fit(fit_on if fit_on is not None else [a, b]).cosine(a, b)


# --- baseline language models: bits per character ------------------------------------------


def bits_per_char(nats_per_token: float, chars_per_token: float) -> float:
    """Cross-entropy in bits per character: nats per token / ln 2 / characters per token."""
    return nats_per_token / math.log(2) / chars_per_token


class CharNgramModel:
    """A unigram (order 1) or bigram (order 2) character model with add-one smoothing.

    The vocabulary is the training text's distinct characters plus one slot for any unseen
    character, V = distinct + 1. Unigram: p(c) = (count(c) + 1) / (N + V). Bigram:
    p(c | a) = (count(a c) + 1) / (count of a followed by something + V); the first character
    of a scored text, which has no predecessor, is scored by the unigram.
    """

    def __init__(self, text: str, order: int = 2):
        if order not in (1, 2):
            raise ValueError("order must be 1 or 2")
        if not text:
            raise ValueError("cannot fit a character model on an empty text")
        self.order = order
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.V = len(self.chars) + 1  # + unknown
        ids = self._ids(text)
        self.uni = np.bincount(ids, minlength=self.V).astype(np.float64)
        self.n = len(ids)
        self.uni_logp = np.log((self.uni + 1.0) / (self.n + self.V))
        if order == 2:
            pair = ids[:-1] * self.V + ids[1:]
            counts = np.bincount(pair, minlength=self.V * self.V).reshape(self.V, self.V).astype(np.float64)
            self.bi_logp = np.log((counts + 1.0) / (counts.sum(axis=1, keepdims=True) + self.V))

    def _ids(self, text: str) -> np.ndarray:
        """Vocabulary indices of text's characters (V - 1 for unseen ones)."""
        codes = codepoints(text)
        table = codepoints("".join(self.chars))  # sorted, as self.chars is
        idx = np.searchsorted(table, codes)
        idx[idx >= len(table)] = 0
        return np.where(table[idx] == codes, idx, self.V - 1).astype(np.int64)

    def nll_nats(self, text: str) -> float:
        """Total negative log-likelihood of text in nats."""
        ids = self._ids(text)
        if len(ids) == 0:
            return 0.0
        if self.order == 1:
            return float(-self.uni_logp[ids].sum())
        return float(-(self.uni_logp[ids[0]] + self.bi_logp[ids[:-1], ids[1:]].sum()))

    def bpc(self, text: str) -> float:
        """Bits per character of text under the model."""
        return self.nll_nats(text) / math.log(2) / max(1, len(text))

    def generate(self, length: int, seed: int, context: str = "") -> str:
        """Sample length characters (never the unknown slot); a bigram starts from context's
        last character (or the unigram when there is none)."""
        rng = np.random.default_rng(seed)
        known = len(self.chars)
        if length <= 0:
            return ""
        if self.order == 1:
            p = np.exp(self.uni_logp[:known])
            return "".join(self.chars[i] for i in rng.choice(known, size=length, p=p / p.sum()))
        probs = np.exp(self.bi_logp[:, :known])
        cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
        u = rng.random(length)
        prev = self.index.get(context[-1], None) if context else None
        out = []
        for k in range(length):
            if prev is None:
                p = np.exp(self.uni_logp[:known])
                c = int(np.searchsorted(np.cumsum(p / p.sum()), u[k], side="right"))
            else:
                c = int(np.searchsorted(cum[prev], u[k], side="right"))
            c = min(c, known - 1)
            out.append(c)
            prev = c
        return "".join(self.chars[i] for i in out)


def codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32) if text else np.zeros(0, np.uint32)
