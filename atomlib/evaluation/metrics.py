"""Text metrics for generated verse: pure functions on strings, each with one stated definition.

Nothing here needs torch or a model; `atomlib.evaluation.evaluate` applies these to a run's samples and
to the baselines. Definitions (also in the README's evaluation section):

- words: lowercased runs of letters/digits, inner apostrophes kept ("o'er", "night's").
- lines: the text's lines, stripped; blank lines separate stanzas and are not lines.
- known_word_rate: share of an output's alphabetic words that are English words (the
  filters' dictionary check: CMU dictionary, archaic verse forms, inflections, names).
- repeated_line_share: (lines - distinct lines) / lines, lines compared lowercased with
  surrounding punctuation and extra spaces removed. None when the text has no line.
- repeated_ngram_share(n=4): (word n-grams - distinct word n-grams) / word n-grams of one text.
- distinct_n: distinct word n-grams / word n-grams (Li et al. 2016); over a list of texts the
  n-grams are pooled (n-grams never span two texts).
- rhyme_density: of the pairs of adjacent lines inside a stanza, the share whose last words
  rhyme. Two words rhyme when they are different words, both are in the CMU pronouncing
  dictionary, and some pronunciation of each has the same rhyming part
  (`pronouncing.rhyming_part`: the phones from the last stressed vowel to the end, stress
  marks included) -- exactly when `b in pronouncing.rhymes(a)`. A word not in the dictionary
  rhymes with nothing. None when the text has no adjacent pair.
- theme: a prompt's themes are the lexicon entries (atomlib/assets/theme_lexicon.json) whose
  head word or a neighbour occurs in the prompt; an output is on theme when it uses any word
  of those entries. Words match after `light_stem` (plural, -ed, -ing, final -e removed).
  None when the prompt touches no theme.
- relevance: cosine similarity of prompt and output vectors: TF-IDF of character 3-5-grams
  within words (`CharTfidf`, always available) or MiniLM sentence embeddings when installed.
- copy: the longest substring of the output that occurs verbatim in the training text
  (`CopyIndex`, a suffix array), as a length in characters and as a share of the output,
  both with whitespace runs collapsed to one space on each side.
- bits per character: nats per token / ln 2 / characters per token.
"""

from __future__ import annotations

import json
import math
import re
from array import array
from collections import Counter
from functools import lru_cache
from importlib import resources
from typing import Iterable, Sequence

import numpy as np

WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_ALNUM_RE = re.compile(r"[^\W_]+")
_EDGE_PUNCT = " \t\"'“”‘’.,;:!?-—–()[]{}*_…"


# --- words and lines -----------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lowercased words: runs of letters or digits, keeping inner apostrophes."""
    return [w.replace("’", "'") for w in WORD_RE.findall(text.lower())]


def lines(text: str) -> list[str]:
    """The non-blank lines of a text, stripped."""
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def stanzas(text: str) -> list[list[str]]:
    """Groups of consecutive non-blank lines (a blank line ends a stanza)."""
    out, cur = [], []
    for ln in text.splitlines():
        if ln.strip():
            cur.append(ln.strip())
        elif cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def _norm_line(line: str) -> str:
    return " ".join(line.lower().split()).strip(_EDGE_PUNCT)


def ngrams(tokens: Sequence[str], n: int) -> list[tuple]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


# --- repetition and diversity --------------------------------------------------------------


def repeated_line_share(text: str) -> float | None:
    """(lines - distinct lines) / lines; lines compared case- and punctuation-insensitively."""
    ls = [n for n in (_norm_line(x) for x in lines(text)) if n]
    if not ls:
        return None
    return (len(ls) - len(set(ls))) / len(ls)


def repeated_ngram_share(text: str, n: int = 4) -> float | None:
    """(word n-grams - distinct word n-grams) / word n-grams; None when the text has none."""
    grams = ngrams(words(text), n)
    if not grams:
        return None
    return (len(grams) - len(set(grams))) / len(grams)


def distinct_n(texts: str | Iterable[str], n: int) -> float | None:
    """Distinct word n-grams / all word n-grams, pooled over texts; None when there are none."""
    if isinstance(texts, str):
        texts = [texts]
    total, seen = 0, set()
    for t in texts:
        grams = ngrams(words(t), n)
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None


def known_word_rate(text: str, is_word) -> float | None:
    """Share of the text's alphabetic words (original case) that is_word accepts; None without words."""
    ws = [w for w in WORD_RE.findall(text) if w.replace("'", "").replace("’", "").isalpha()]
    if not ws:
        return None
    return sum(bool(is_word(w.replace("’", "'"))) for w in ws) / len(ws)


# --- rhyme ---------------------------------------------------------------------------------


def last_word(line: str) -> str | None:
    ws = words(line)
    return ws[-1] if ws else None


@lru_cache(maxsize=65536)
def rhyming_parts(word: str) -> frozenset[str]:
    """The rhyming parts of every CMU pronunciation of word (empty when it is not in the dictionary)."""
    import pronouncing

    return frozenset(pronouncing.rhyming_part(p) for p in pronouncing.phones_for_word(word.strip("'")))


def words_rhyme(a: str | None, b: str | None) -> bool:
    """True when a and b are different dictionary words sharing a rhyming part."""
    if not a or not b:
        return False
    a, b = a.lower().strip("'"), b.lower().strip("'")
    if a == b:
        return False
    return bool(rhyming_parts(a) & rhyming_parts(b))


def rhyme_pairs(text: str) -> tuple[int, int]:
    """(rhyming adjacent pairs, adjacent pairs) over the lines of each stanza."""
    hits = total = 0
    for st in stanzas(text):
        ends = [last_word(ln) for ln in st]
        for a, b in zip(ends, ends[1:]):
            total += 1
            hits += words_rhyme(a, b)
    return hits, total


def rhyme_density(text: str) -> float | None:
    """Share of adjacent line pairs (within a stanza) whose last words rhyme; None with no pair."""
    hits, total = rhyme_pairs(text)
    return hits / total if total else None


# --- theme ---------------------------------------------------------------------------------

_SUFFIXES = ("ings", "ing", "ed", "es", "s")


def light_stem(word: str) -> str:
    """A very light stemmer: drop one of -ings/-ing/-ed/-es/-s, undouble a final consonant,
    drop a final -e, never leaving fewer than 3 letters. burning, burned, burns -> burn;
    flames, flame -> flam; ashes -> ash; embers -> ember."""
    w = word.lower().strip("'")
    if w.endswith("'s"):
        w = w[:-2]
    for suf in _SUFFIXES:
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            w = w[: -len(suf)]
            break
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiou":
        w = w[:-1]
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


@lru_cache(maxsize=1)
def default_lexicon() -> dict[str, list[str]]:
    """The shipped theme lexicon: theme word -> near neighbours."""
    text = resources.files("atomlib").joinpath("assets/theme_lexicon.json").read_text(encoding="utf-8")
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


class ThemeLexicon:
    """Theme entries (head + neighbours) matched by light stems."""

    def __init__(self, lexicon: dict[str, list[str]] | None = None):
        lex = default_lexicon() if lexicon is None else lexicon
        self.entries = {head: frozenset(light_stem(w) for w in [head, *nbrs]) for head, nbrs in lex.items()}

    def themes(self, text: str) -> list[str]:
        """The theme heads whose entry shares a stem with text."""
        stems = {light_stem(w) for w in words(text)}
        return [head for head, ws in self.entries.items() if ws & stems]

    def theme_stems(self, text: str) -> frozenset[str]:
        out: set[str] = set()
        for head in self.themes(text):
            out |= self.entries[head]
        return frozenset(out)

    def on_theme(self, prompt: str, output: str) -> bool | None:
        """True when output uses a word of the prompt's themes; None when the prompt has none."""
        stems = self.theme_stems(prompt)
        if not stems:
            return None
        return any(light_stem(w) in stems for w in words(output))

    def hits(self, prompt: str, output: str) -> list[str]:
        stems = self.theme_stems(prompt)
        return sorted({w for w in words(output) if light_stem(w) in stems})


def theme_hit(prompt: str, output: str, lexicon: ThemeLexicon | None = None) -> bool | None:
    return (lexicon or _default_theme()).on_theme(prompt, output)


@lru_cache(maxsize=1)
def _default_theme() -> ThemeLexicon:
    return ThemeLexicon()


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

    def similarities(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return [self.cosine(a, b) for a, b in pairs]


def tfidf_cosine(a: str, b: str, fit_on: Iterable[str] | None = None) -> float:
    """Cosine of the char 3-5-gram (within words) TF-IDF vectors of a and b (idf from fit_on, else a and b)."""
    return CharTfidf().fit(fit_on if fit_on is not None else [a, b]).cosine(a, b)


# --- language-model arithmetic -----------------------------------------------------------


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
        codes = _codepoints(text)
        table = _codepoints("".join(self.chars))  # sorted, as self.chars is
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


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32) if text else np.zeros(0, np.uint32)


# --- copying: longest common substring with the training text -----------------------------


def suffix_array(codes: np.ndarray, depth: int = 1024) -> np.ndarray:
    """Start positions of the suffixes of codes, sorted by their first `depth` symbols
    (ties beyond that in any order). Prefix doubling (Manber-Myers) in numpy, re-sorting
    only the groups that are still tied; codes must be non-negative integers."""
    codes = np.asarray(codes)
    n = len(codes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # dense ranks 1..V keep the symbol order (0 is the end of the text)
    present = np.zeros(int(codes.max()) + 1, dtype=np.int64)
    present[codes] = 1
    lut = np.cumsum(present)
    sym = lut[codes].astype(np.int64)
    V = int(lut[-1]) + 1
    k = 1
    while k < depth and (V ** (k + 1)) < 2**62:
        k += 1
    key = sym * (V ** (k - 1))
    for j in range(1, min(k, n)):
        key[: n - j] += sym[j:] * (V ** (k - 1 - j))
    order = np.argsort(key, kind="stable")
    sk = key[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(sk[1:], sk[:-1], out=new[1:])
    del key, sk
    # rank[p] = index in `order` where p's group starts (a group = suffixes tied so far)
    heads = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = heads
    h = k
    while h < depth:
        # groups of size > 1 are unresolved
        group_end = np.empty(n, dtype=bool)
        group_end[:-1] = new[1:]
        group_end[-1] = True
        single = new & group_end
        idx = np.nonzero(~single)[0]
        if len(idx) == 0:
            break
        pos = order[idx]
        second = np.zeros(len(idx), dtype=np.int64)
        ok = pos + h < n
        second[ok] = rank[pos[ok] + h] + 1
        key = rank[pos] * (n + 1) + second
        perm = np.argsort(key, kind="stable")
        key = key[perm]
        pos = pos[perm]
        order[idx] = pos
        starts = np.empty(len(idx), dtype=bool)
        starts[0] = True
        np.not_equal(key[1:], key[:-1], out=starts[1:])
        sub_heads = np.maximum.accumulate(np.where(starts, idx, 0))
        rank[pos] = sub_heads
        new[idx] = starts
        h *= 2
    return order


class CopyIndex:
    """Answers 'what is the longest piece of this text that occurs verbatim in the corpus?'.

    Runs of whitespace are collapsed to one space in the corpus and in every query first
    (layout is not content: a run of indentation is no evidence of memorisation), and lengths
    are counted in that normalised text. A suffix array of the corpus (sorted to `depth`
    characters) and binary search: the longest common substring of a query q and the corpus
    is found with the sliding window of matching statistics (at most 2 |q| membership tests,
    each O(log N) comparisons). Matches longer than `depth` are counted as `depth`.
    """

    def __init__(self, text: str, depth: int = 1024):
        self.text = normalize_space(text)
        self.depth = depth
        self.sa = suffix_array(_codepoints(self.text), depth=depth).astype(np.int64)
        self._sa = array("q")  # indexing gives python ints: faster than numpy in the search loop
        self._sa.frombytes(self.sa.tobytes())

    def contains(self, pattern: str) -> bool:
        """True when pattern occurs in the corpus (len(pattern) <= depth)."""
        if not pattern:
            return True
        text, sa, L = self.text, self._sa, len(pattern)
        lo, hi = 0, len(sa)
        while lo < hi:  # first suffix whose L-prefix >= pattern
            mid = (lo + hi) // 2
            s = sa[mid]
            if text[s:s + L] < pattern:
                lo = mid + 1
            else:
                hi = mid
        return lo < len(sa) and text.startswith(pattern, sa[lo])

    def longest_match(self, query: str) -> tuple[int, int]:
        """(length, start) of the longest substring of the normalised query found in the corpus."""
        query = normalize_space(query)
        best, best_at, i = 0, 0, 0
        for j in range(1, len(query) + 1):
            # window query[i:j]: shrink from the left until it occurs (or is empty)
            while i < j and (j - i > self.depth or not self.contains(query[i:j])):
                i += 1
            if j - i > best:
                best, best_at = j - i, i
        return best, best_at

    def copy_rate(self, query: str) -> float | None:
        """Longest copied span / length of the normalised query; None for an empty one."""
        query = normalize_space(query)
        if not query:
            return None
        return self.longest_match(query)[0] / len(query)


_SPACE_RE = re.compile(r"\s+")


def normalize_space(text: str) -> str:
    """Every run of whitespace as one space (ends kept as they are, one space at most)."""
    return _SPACE_RE.sub(" ", text)
