"""atomlib.untrusted: the deadline, the byte cap and the printable text that the DarkLyrics fetcher
and the LM Studio client share."""

from __future__ import annotations

import io
import time

import pytest

from atomlib.untrusted import Deadline, DeadlinePassed, TooLarge, one_line, read_capped, strip_controls


def test_deadline_counts_down_then_refuses():
    deadline = Deadline.after(0.2)
    assert 0 < deadline.left() <= 0.2
    time.sleep(0.25)
    with pytest.raises(DeadlinePassed):
        deadline.left()


def test_read_capped_reads_a_body_whole():
    body = b"x" * 200_000  # several reads
    assert read_capped(io.BytesIO(body).read, limit=200_000) == body
    assert read_capped(io.BytesIO(b"").read, limit=10) == b""


def test_read_capped_refuses_a_body_over_the_cap_as_soon_as_it_is():
    reads = []
    stream = io.BytesIO(b"x" * 10_000_000)

    def read(n):
        reads.append(n)
        return stream.read(n)

    with pytest.raises(TooLarge) as e:
        read_capped(read, limit=100_000)
    assert e.value.declared is None and len(reads) <= 3  # stopped after the read that passed the cap
    with pytest.raises(TooLarge) as e:
        read_capped(io.BytesIO(b"small").read, limit=100, declared=10_000)  # refused on its word alone
    assert e.value.declared == 10_000


def test_read_capped_stops_at_the_deadline():
    def drip(n):
        time.sleep(0.05)
        return b"x"

    t0 = time.monotonic()
    with pytest.raises(DeadlinePassed):
        read_capped(drip, limit=1_000_000, deadline=Deadline.after(0.3))
    assert time.monotonic() - t0 < 1.0


def test_controls_and_escapes_never_survive():
    evil = "ok\x1b[31mred\x1b[0m \x1b]0;title\x07bell\x9b\x00\x7f\ttab\nline"
    assert strip_controls(evil) == "okred bell\ttab\nline"
    assert one_line(evil) == "okred bell tab line"
    assert one_line(None) is None
