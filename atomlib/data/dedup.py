"""Duplicate documents: exact (the same text up to case and whitespace) and near (Jaccard >= 0.8
over the sets of 3-word shingles of the whole document), keeping the first seen.

Near duplicates are found with MinHash + LSH and then confirmed exactly, so the cost stays close
to linear in the corpus. Two songs that merely share a refrain have a low whole-document
Jaccard, so both stay.
"""

from __future__ import annotations

import hashlib
import re
import zlib

import numpy as np

_WORD = re.compile(r"\w+")
NUM_PERM, BANDS = 64, 16  # LSH: 16 bands x 4 rows: pairs with Jaccard >= 0.8 are candidates with p > 0.999
_rng = np.random.default_rng(20240601)
_A = _rng.integers(1, 1 << 32, NUM_PERM, dtype=np.uint64) | np.uint64(1)
_B = _rng.integers(0, 1 << 32, NUM_PERM, dtype=np.uint64)


def shingles(text: str, k: int = 3) -> np.ndarray:
    """The set of k-word shingles of a document (lower-cased words), as sorted unique uint32 hashes."""
    words = _WORD.findall(text.lower())
    if not words:
        return np.zeros(0, dtype=np.uint32)
    vocab = {w: zlib.crc32(w.encode()) for w in set(words)}  # a stable hash per distinct word
    h = np.fromiter(map(vocab.__getitem__, words), dtype=np.uint64, count=len(words))
    k = min(k, len(h))
    g = np.zeros(len(h) - k + 1, dtype=np.uint64)
    for j in range(k):  # polynomial combination of k consecutive word hashes (wraps mod 2**64)
        g = g * np.uint64(1_000_003) + h[j:len(h) - k + 1 + j]
    return np.unique((g ^ (g >> np.uint64(32))).astype(np.uint32))


def minhash(sh: np.ndarray) -> np.ndarray:
    """MinHash signature: for each of NUM_PERM multiply-shift hashes, the minimum over the shingles."""
    sig = np.full(NUM_PERM, np.iinfo(np.uint64).max, dtype=np.uint64)
    x = sh.astype(np.uint64)
    for i in range(0, len(x), 8192):  # chunks bound the memory of the (shingles x perms) table
        h = (x[i:i + 8192, None] * _A[None, :] + _B[None, :]) >> np.uint64(32)
        np.minimum(sig, h.min(axis=0), out=sig)
    return sig


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) == 0 and len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


class Deduper:
    """Remembers kept documents; check(text) says None (new), 'exact' or 'near' (a duplicate)."""

    def __init__(self, threshold: float = 0.8):
        self.threshold = threshold
        self.exact: set[bytes] = set()
        self.bands: list[dict] = [{} for _ in range(BANDS)]
        self.kept: list[np.ndarray] = []

    def check(self, text: str) -> str | None:
        key = hashlib.blake2b(" ".join(text.lower().split()).encode(), digest_size=16).digest()
        if key in self.exact:
            return "exact"
        sh = shingles(text)
        sig = minhash(sh).reshape(BANDS, -1)
        keys = [sig[b].tobytes() for b in range(BANDS)]
        seen = set()
        for band, k in zip(self.bands, keys):
            for j in band.get(k, ()):
                if j not in seen:
                    seen.add(j)
                    if jaccard(sh, self.kept[j]) >= self.threshold:
                        return "near"
        self.exact.add(key)
        idx = len(self.kept)
        self.kept.append(sh)
        for band, k in zip(self.bands, keys):
            band.setdefault(k, []).append(idx)
        return None
