"""Copying: the longest piece of an output found verbatim in the training text.

A model that memorises its corpus scores well on every other metric, so the evaluation measures
copying directly: the longest substring of the output that occurs in the train split (`CopyIndex`,
a suffix array), as a length in characters and as a share of the output, both with whitespace
runs collapsed to one space on each side.
"""

from __future__ import annotations

import re
from array import array

import numpy as np

from atomlib.evaluation.char_ngrams import codepoints


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
        self.sa = suffix_array(codepoints(self.text), depth=depth).astype(np.int64)
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
