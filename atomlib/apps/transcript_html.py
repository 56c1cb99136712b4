"""The notebook chat's transcript as HTML: past turns, command results and the answer being written.

Pure functions from the session's turns to markup, so the widget only decides when to redraw.
The past and the live answer are drawn apart: while an answer streams only the live part is
sent to the browser again, and a folded prompt the user opened stays open. A prompt longer
than a few lines is folded into a <details> that shows its first lines, as chat apps do, so a
pasted 20,000-character text does not push the answers off screen.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

FOLD_LINES = 6  # a prompt with more lines than this is folded
FOLD_CHARS = 600  # and so is one with more characters
PREVIEW_LINES = 3
PREVIEW_CHARS = 240
CURSOR = "\u2588"  # the block after a growing answer

CSS = """
<style>
.atom-chat {background:#111; color:#ddd; font-family: ui-monospace, Menlo, Consolas, monospace; font-size:13px;
  border:1px solid #333; border-radius:6px; padding:8px; height:360px; min-height:120px; overflow-y:auto;
  resize:vertical; line-height:1.45; box-sizing:border-box; width:100%;
  display:flex !important; flex-direction:column-reverse !important;}
.atom-chat > * {flex:0 0 auto; min-width:0; max-width:100%;}
.atom-chat > .atom-past {order:2;}
.atom-chat > .atom-live {order:1;}
.atom-chat .widget-html-content {line-height:1.45; font-size:13px;}
.atom-chat .msg {margin:4px 0; white-space:pre-wrap; overflow-wrap:anywhere;}
.atom-chat .you {color:#9cf;}
.atom-chat .atom {color:#eee;}
.atom-chat .raw {color:#888;}
.atom-chat .enh {color:#fc6;}
.atom-chat .cmd {color:#aaa; font-style:italic;}
.atom-chat .err {color:#f96;}
.atom-chat .note {color:#777; font-size:11px;}
.atom-chat .who {font-weight:bold; margin-right:6px;}
.atom-chat .hint {color:#666;}
.atom-chat details.fold {display:inline;}
.atom-chat details.fold > summary {cursor:pointer; display:inline; list-style:none;}
.atom-chat details.fold > summary::-webkit-details-marker {display:none;}
.atom-chat details.fold[open] > summary .preview {display:none;}
.atom-chat details.fold .more {color:#777; font-size:11px; font-style:italic;}
</style>
"""


@dataclass
class Live:
    """The exchange being generated: the prompt and what has streamed in so far."""

    user: str
    mode: str
    raw: str = ""  # the sample as it streams
    answer: str | None = None  # the filtered answer, once there is one
    enh: str = ""  # the rewrite as it streams
    enh_on: bool = False


@dataclass
class LogEntry:
    """A command's result, shown after the turn it followed (`at` = len(history) then)."""

    kind: str
    text: str
    at: int
    cmd: str = ""


def esc(text: str) -> str:
    return html.escape(text or "")


def fold(text: str) -> str:
    """`text` escaped, folded into a <details> with its first lines when it is long."""
    lines = text.split("\n")
    if len(lines) <= FOLD_LINES and len(text) <= FOLD_CHARS:
        return esc(text)
    preview = "\n".join(lines[:PREVIEW_LINES])[:PREVIEW_CHARS].rstrip()
    size = f"{len(text):,} characters, {len(lines):,} line{'s' if len(lines) != 1 else ''}"
    return (f"<details class='fold'><summary><span class='preview'>{esc(preview)}\u2026 </span>"
            f"<span class='more'>({size}; click to show all)</span></summary>{esc(text)}</details>")


def _you(text: str, tag: str = "") -> str:
    return f"<div class='msg you'><span class='who'>you&gt;</span>{fold(text)}{tag}</div>"


def _atom(text: str, cls: str = "atom", who: str = "atom&gt;") -> str:
    return f"<div class='msg {cls}'><span class='who'>{who}</span>{esc(text)}</div>"


def _turn(t) -> str:
    if t.role == "user":
        kind = f", {t.meta['kind']}" if t.meta.get("kind") else ""
        return _you(t.text, f" <span class='note'>[{esc(t.mode + kind)}]</span>")
    enh = t.meta.get("enhance") or {}
    out = ""
    if enh.get("applied"):
        out += _atom(t.meta.get("model_text", "")) + _atom(t.text, "enh", "atom+&gt;")
    else:
        out += _atom(t.text or "(no text)")
    if t.meta.get("notes"):
        out += f"<div class='msg note'>({esc('; '.join(t.meta['notes']))})</div>"
    return out


def _log(e: LogEntry) -> str:
    out = _you(e.cmd) if e.cmd else ""
    return out + f"<div class='msg {'err' if e.kind == 'error' else 'cmd'}'>{esc(e.text)}</div>"


def past_html(history, log: list[LogEntry]) -> str:
    """The finished turns with the command results between them, oldest first."""
    parts, entries, li = [], sorted(log, key=lambda e: e.at), 0
    for i, turn in enumerate(history):
        while li < len(entries) and entries[li].at <= i:
            parts.append(_log(entries[li]))
            li += 1
        parts.append(_turn(turn))
    parts += [_log(e) for e in entries[li:]]
    if not parts:
        parts.append("<div class='msg hint'>Type a prompt below and press Enter (Shift+Enter adds a line). "
                     "/help lists the commands.</div>")
    return "".join(parts)


def live_html(live: Live | None) -> str:
    """The exchange being generated: the prompt, then the raw sample behind a cursor block, then
    the filtered answer and the rewrite as it streams."""
    if live is None:
        return ""
    parts = [_you(live.user, f" <span class='note'>[{esc(live.mode)}]</span>")]
    if live.answer is None:
        parts.append(_atom(live.raw + CURSOR, "raw"))
    else:
        parts.append(_atom(live.answer))
        if live.enh_on:
            parts.append(_atom(live.enh + CURSOR, "enh", "atom+&gt;"))
    return "".join(parts)


def plain_text(*fragments: str) -> str:
    """What the HTML shows, without markup (a folded prompt counts once, in full)."""
    out = []
    for body in fragments:
        body = re.sub(r"<style>.*?</style>", "", body, flags=re.S)
        body = re.sub(r"<span class='preview'>.*?</span>|<span class='more'>.*?</span>", "", body, flags=re.S)
        out.append(html.unescape(re.sub(r"<[^>]+>", "", body.replace("</div>", "</div>\n"))).strip())
    return "\n".join(o for o in out if o)
