"""What a chat exchange leaves behind: the Reply to one input, the turns, and their export.

    reply = session.send("fire and steel")   # a Reply: kind, text, notes, the model's raw sample
    session.history                          # a Transcript: the turns, oldest first
    session.history.save("chat.md", session.header())   # Markdown, or JSON for a .json name

A Transcript is a list of Turns (you, then the model), so views iterate it as they draw.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from atomlib.paths import write_atomic

SAVE_SUFFIXES = (".md", ".markdown", ".json")  # Markdown, or JSON for .json


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Reply:
    """What one input produced. kind: answer | completion | command | error | empty | clear | quit."""

    kind: str
    text: str = ""
    notes: list[str] = field(default_factory=list)
    raw: str = ""  # the text as sampled (and streamed), before filters and enhancement
    model_text: str = ""  # the model's answer after filters, before enhancement
    prompt_kind: str | None = None
    stopped: bool = False
    enhanced: object | None = None  # atomlib.apps.enhance.EnhanceResult when enhancement ran
    meta: dict = field(default_factory=dict)

    @property
    def is_generation(self) -> bool:
        return self.kind in ("answer", "completion")


@dataclass
class Turn:
    role: str  # "user" | "atom"
    text: str
    mode: str
    time: str = field(default_factory=_now)
    meta: dict = field(default_factory=dict)


class Transcript(list):
    """The turns of one chat, oldest first: a user turn, then the model's answer to it."""

    @property
    def exchanges(self) -> int:
        return len(self) // 2

    def record(self, text: str, mode: str, reply: Reply) -> None:
        """Add the user's input and the model's reply as two turns."""
        self.append(Turn("user", text, mode, meta={"kind": reply.prompt_kind} if reply.prompt_kind else {}))
        self.append(answer_turn(mode, reply))

    def state(self) -> tuple:
        """What tells this transcript from an earlier state of it: how many turns, and which is last."""
        return len(self), id(self[-1]) if self else None

    def last_prompt(self) -> Turn | None:
        """The user turn of the last exchange, or None when there is none."""
        return self[-2] if len(self) >= 2 and self[-2].role == "user" else None

    def to_dict(self, header: dict) -> dict:
        """header: what the session says about itself (run, step, mode, settings, enhance)."""
        return {**header, "saved": _now(), "turns": [dataclasses.asdict(t) for t in self]}

    def to_markdown(self, header: dict) -> str:
        run = header.get("run")
        out = [f"# ATOM-GPT chat: {Path(run).name if run else '(in memory)'}", "",
               f"Saved {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; run `{run or '(in memory)'}`, "
               f"step {'?' if header.get('step') is None else header['step']}.", ""]
        for t in self:
            if t.role == "user":
                kind = f", {t.meta['kind']}" if t.meta.get("kind") else ""
                out += [f"**You** ({t.mode}{kind}):", "", _quote(t.text), ""]
            else:
                out += ["**ATOM-GPT:**", "", _quote(t.text or "(no text)"), ""]
                if t.meta.get("notes"):
                    out += [f"_{'; '.join(t.meta['notes'])}_", ""]
        return "\n".join(out)

    def save(self, path: str | Path, header: dict) -> Path:
        """Write Markdown (.md, .markdown) or JSON (.json); returns the absolute path written."""
        path = Path(path)
        text = (json.dumps(self.to_dict(header), indent=1, ensure_ascii=False) if path.suffix.lower() == ".json"
                else self.to_markdown(header))
        # Encoded first and written atomically, so nothing half-written is left behind. Text can hold
        # lone surrogates (undecodable terminal bytes): they are written as \udXXX escapes, which
        # JSON reads back as the same characters.
        write_atomic(path, text.encode("utf-8", errors="backslashreplace"))
        return path.resolve()


def answer_turn(mode: str, reply: Reply) -> Turn:
    """The model's turn: its text, with the reply's details and notes (and its own text when rewritten)."""
    meta = dict(reply.meta)
    if reply.notes:
        meta["notes"] = list(reply.notes)
    if reply.enhanced is not None and reply.enhanced.applied:
        meta["model_text"] = reply.model_text
    return Turn("atom", reply.text, mode, meta=meta)


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.split("\n"))
