"""Text metrics for generated verse: pure functions on strings, each with one stated definition.

Nothing here needs torch or a model; `atomlib.evaluation.scoring` applies these to a run's samples
and to the baselines (char_ngrams holds the character models and relevance, copying the
memorisation check). Definitions (also in the README's evaluation section):

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
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Iterable, Sequence

import pronouncing

WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
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
