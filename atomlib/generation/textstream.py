"""The host side of the decode loop: token ids to text, stop strings, end-of-text, streamed pieces.

The loop (engine.py) keeps sampled ids on the device and hands them to a `TextTracker` only when
text matters (stop strings, streaming, end-of-text on a CPU). The tracker decodes each sample
incrementally, one token at a time, ends a sample at its first stop string or end-of-text
token (recording why: "stop", "eot"), and emits a streamed piece only once it cannot turn out
to be the start of a stop string, so the pieces of a sample always concatenate to its final text.
"""

from __future__ import annotations


class IncrementalDecoder:
    """Turns one sample's token ids into text as they arrive. Char tokens are characters;
    BPE tokens are held back while they end inside a UTF-8 sequence (decoded as U+FFFD)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.chars = tokenizer.chars if getattr(tokenizer, "kind", None) == "char" else None
        self.pending: list[int] = []

    def push(self, tid: int) -> str:
        if self.chars is not None:
            return self.chars[tid] if 0 <= tid < len(self.chars) else ""
        self.pending.append(tid)
        text = self.tokenizer.decode(self.pending)
        if text.endswith("\ufffd") and len(self.pending) < 4:  # a UTF-8 character is at most 4 bytes
            return ""
        self.pending = []
        return text

    def flush(self) -> str:
        text = self.tokenizer.decode(self.pending) if self.pending else ""
        self.pending = []
        return text


class TextTracker:
    """Per-sample text of a batch: stop strings, end-of-text, and the pieces to stream.

    After the loop, texts[i] is sample i's text (stop string cut off), ntokens[i] how many of its
    tokens it kept and reasons[i] why it ended; `active` counts the samples still running."""

    def __init__(self, tokenizer, batch: int, stops: tuple[str, ...], min_new_tokens: int, eot: int | None,
                 streaming: bool):
        self.stops = stops
        self.min_new = min_new_tokens
        self.eot = eot
        self.streaming = streaming
        self.decoders = [IncrementalDecoder(tokenizer) for _ in range(batch)]
        self.texts = [""] * batch
        self.emitted = [0] * batch
        self.floor = [0] * batch  # a stop string must end after this offset (min_new_tokens)
        self.ntokens: list[int | None] = [None] * batch
        self.reasons: list[str | None] = [None] * batch
        self.active = batch

    def push(self, ids: list[int], t: int) -> list[tuple[int, str]]:
        """Take the token each sample drew at step t; return the (sample, piece) pairs to stream."""
        events: list[tuple[int, str]] = []
        for i, tid in enumerate(ids):
            if self.reasons[i] is not None:
                continue
            if tid == self.eot:
                self._finish(i, t, "eot", None, events)
                continue
            prev = len(self.texts[i])
            text = self.texts[i] = self.texts[i] + self.decoders[i].push(tid)
            if self.stops:
                cut = self._stop_cut(i, text, prev, t)
                if cut is not None:
                    self._finish(i, t + 1, "stop", cut, events)
                    continue
            if self.streaming:
                safe = len(text) - self._holdback(text)
                if safe > self.emitted[i]:
                    events.append((i, text[self.emitted[i]:safe]))
                    self.emitted[i] = safe
        return events

    def close(self, n: int, reason: str) -> list[tuple[int, str]]:
        """End every sample still running (after n tokens) with reason; return the last pieces."""
        events: list[tuple[int, str]] = []
        for i in range(len(self.texts)):
            if self.reasons[i] is None:
                self._finish(i, n, reason, None, events)
        return events

    def _stop_cut(self, i: int, text: str, prev: int, t: int) -> int | None:
        """Where the earliest stop string in sample i's text starts, looking only where step t's
        piece (text[prev:]) could have completed one and past min_new_tokens; None if there is none."""
        if t == self.min_new - 1:
            self.floor[i] = prev
        if t < self.min_new - 1:
            return None
        cut = None
        for s in self.stops:
            j = text.find(s, max(prev - len(s) + 1, self.floor[i] - len(s) + 1, 0))
            if j >= 0 and (cut is None or j < cut):
                cut = j
        return cut

    def _holdback(self, text: str) -> int:
        """Length of the longest tail of text that could still grow into a stop string."""
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best

    def _finish(self, i: int, ntokens: int, reason: str, cut: int | None, events: list):
        text = self.texts[i] + self.decoders[i].flush()
        if cut is not None:
            text = text[:cut]
        self.texts[i] = text
        self.ntokens[i], self.reasons[i] = ntokens, reason
        self.active -= 1
        if self.streaming and len(text) > self.emitted[i]:
            events.append((i, text[self.emitted[i]:]))
            self.emitted[i] = len(text)
