"""Reading from a server that is not trusted: one deadline, a byte cap, text safe to print.

Two clients talk to servers that may be slow, huge or hostile: the DarkLyrics fetcher
(atomlib.data.fetcher) and the LM Studio client (atomlib.apps.llm_client). Both keep the same
promises, written once here:

  - one deadline per request: every wait (connect, send, each read) gets only the time left,
    so a server that drips a byte at a time cannot stretch the request past its limit;
  - a byte cap: a body is refused as soon as it says or turns out to be larger than the cap,
    before it is held whole or any pattern runs over it;
  - printable text: terminal escapes and control characters in what a server sent never reach
    the terminal or the notebook (warnings, reasons, model names, rewrites).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

CHUNK = 64 * 1024  # bytes asked for per read of a body

# Terminal escapes: CSI (ESC [ ... final byte), OSC/DCS/SOS/PM/APC strings (up to BEL or ESC \\),
# any other ESC pair; then every other C0/C1 control character and DEL, except tab and newline.
_CONTROLS = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]?|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?"
                       r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]", re.S)


class DeadlinePassed(Exception):
    """The request's time is up."""


class TooLarge(Exception):
    """A body over the cap. declared: the size the server announced, when that was the reason."""

    def __init__(self, declared: int | None = None):
        super().__init__(declared)
        self.declared = declared


@dataclass(frozen=True)
class Deadline:
    """A moment on the monotonic clock by which a request must be over."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def left(self) -> float:
        """The seconds left; raises DeadlinePassed when there are none."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise DeadlinePassed()
        return left


def read_capped(read: Callable[[int], bytes], limit: int, declared: int | None = None,
                deadline: Deadline | None = None) -> bytes:
    """The whole body from read(n) calls, refused with TooLarge as soon as it passes `limit` bytes
    (or `declared`, its announced length, does), and with DeadlinePassed once `deadline` is."""
    if declared is not None and declared > limit:
        raise TooLarge(declared)
    body = bytearray()
    while chunk := read(CHUNK):
        body += chunk
        if len(body) > limit:
            raise TooLarge()
        if deadline is not None:
            deadline.left()
    return bytes(body)


def strip_controls(text: str) -> str:
    """`text` without terminal escape sequences or control characters (newline and tab stay)."""
    return _CONTROLS.sub("", text)


def one_line(text: str | None) -> str | None:
    """Text as a one-line message shows it: no control characters, all whitespace runs one space."""
    return None if text is None else " ".join(strip_controls(text).split())
