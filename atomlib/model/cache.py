"""The model's KV caches: keys and values kept between forwards, so generation feeds new tokens only.

    KVCache   every row at the same length: one generation (its samples decode side by side)
    RowCache  each row at its own length: many requests decoding together (continuous batching)

The forward (gpt.py) asks a cache where the new tokens go (positions), hands it each layer's
keys and values (attend) and then moves it on (advance); the rest is filling and moving rows.
"""

from __future__ import annotations

import torch

from atomlib.model.kernels import cached_attention, masked_attention


class KVCache:
    """Preallocated keys and values of every layer, so a generation step appends in place.

    k, v: (n_layer, batch, n_head, max_len, head_dim). `pos` counts the tokens already in the
    cache; a forward writes its keys at [pos, pos+T) in every layer, then advances pos.
    """

    def __init__(self, n_layer, batch_size, n_head, max_len, head_dim, device=None, dtype=None):
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        # empty, not zeros: attention only ever reads positions below pos, all written first
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0

    def attend(self, layer: int, q, k, v):
        """Store this chunk's keys/values for a layer; attend its queries to everything cached."""
        t0, t1 = self.pos, self.pos + k.size(2)
        self.k[layer, :, :, t0:t1] = k
        self.v[layer, :, :, t0:t1] = v
        return cached_attention(q, *self.layer(layer, t1), past=t0)

    def layer(self, layer: int, end: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of one layer's keys and values at positions [0, end) (default: the cached pos),
        (batch, n_head, end, head_dim) each."""
        end = self.pos if end is None else end
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def fill_rows(self, one: "KVCache") -> None:
        """Copy a batch-1 cache's tokens into every row of this one: one prompt, prefilled once for a batch."""
        n = one.pos
        self.k[:, :, :, :n].copy_(one.k[:, :, :, :n])
        self.v[:, :, :, :n].copy_(one.v[:, :, :, :n])
        self.pos = n

    def reset(self):
        self.pos = 0

    def positions(self, T: int) -> slice:
        """Where the next T tokens go: the same positions in every row."""
        return slice(self.pos, self.pos + T)

    def advance(self, T: int) -> None:
        self.pos += T


class RowCache:
    """A KV cache whose rows each hold their own sequence at their own length: many requests
    decoding together (continuous batching, generation/batcher.py).

    Rows [0, rows) are in use. A forward feeds one chunk of T tokens per row in use; row i's go
    at its own positions [lengths[i], lengths[i] + T) and attend to that row's tokens only (a
    per-row mask), so each row computes what it would alone in a KVCache. Rows join by copying
    a prefilled KVCache in (add) and leave by compaction (keep), so rows in use stay contiguous.
    """

    def __init__(self, n_layer, max_rows, n_head, max_len, head_dim, device=None, dtype=None):
        shape = (n_layer, max_rows, n_head, max_len, head_dim)
        # zeros, not empty: a short row's mask hides the positions past its length, but masked
        # scores are still computed, and uninitialised memory may hold NaN (NaN + -inf is NaN).
        # What a row leaves behind is finite, so reused rows are safe.
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_rows, self.max_len = max_rows, max_len
        self.lengths: list[int] = []  # tokens cached in each row in use
        self._chunk = None  # (row ids, positions, keys in view, mask) of the chunk being forwarded

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def pos(self) -> int:
        """The longest row's length (the forward's block-size check)."""
        return max(self.lengths, default=0)

    def positions(self, T: int) -> torch.Tensor:
        """Each row's positions for the next T tokens (rows, T); what every layer's attend needs
        is worked out here, once a forward."""
        dev = self.k.device
        where = torch.tensor(self.lengths, device=dev)[:, None] + torch.arange(T, device=dev)
        L = self.pos + T
        self._chunk = (torch.arange(len(self.lengths), device=dev)[:, None], where, L,
                       (torch.arange(L, device=dev) <= where[:, :, None]).unsqueeze(1))  # a row's past and itself
        return where

    def attend(self, layer: int, q, k, v):
        rows, where, L, mask = self._chunk  # mask (B, 1, T, L)
        self.k[layer, rows, :, where] = k.transpose(1, 2)  # (B, T, H, D) into each row's own positions
        self.v[layer, rows, :, where] = v.transpose(1, 2)
        B = q.size(0)
        return masked_attention(q, self.k[layer, :B, :, :L], self.v[layer, :B, :, :L], mask)

    def advance(self, T: int) -> None:
        self.lengths = [n + T for n in self.lengths]

    def add(self, one: KVCache | None, length: int, src: list[int] | None = None, copies: int = 1) -> int:
        """New rows at the end, holding the first `length` positions of rows `src` of a prefilled
        cache (default: every row), each `copies` times (one prompt, n samples); `one` may be None
        when length is 0. Returns the first new row's index."""
        src = list(range(one.k.size(1))) if src is None else src
        idx = [i for i in src for _ in range(copies)]
        first = self.rows
        if first + len(idx) > self.max_rows:
            raise ValueError(f"no room for {len(idx)} rows: {first} of {self.max_rows} are in use")
        self.lengths += [0] * len(idx)
        self.set_rows(list(range(first, first + len(idx))), one, idx, length)
        return first

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows, in this order, moved to the front (the others' requests are over)."""
        moved = [i for j, i in enumerate(rows) if i != j]
        if moved:
            idx = torch.tensor(rows, device=self.k.device)
            L = self.pos
            self.k[:, :len(rows), :, :L] = self.k[:, idx, :, :L]
            self.v[:, :len(rows), :, :L] = self.v[:, idx, :, :L]
        self.lengths = [self.lengths[i] for i in rows]

    def set_rows(self, rows: list[int], one: KVCache | None, src: list[int], length: int) -> None:
        """These rows hold the first `length` positions of rows `src` of a prefilled cache from now
        on (new rows, or rows whose window slid); the positions past `length` are never read."""
        if length:
            dst, src_t = torch.tensor(rows, device=self.k.device), torch.tensor(src, device=self.k.device)
            self.k[:, dst, :, :length] = one.k[:, src_t, :, :length]
            self.v[:, dst, :, :length] = one.v[:, src_t, :, :length]
        for r in rows:
            self.lengths[r] = length
