"""Cleaning rules for any printed text: markup, Unicode, Project Gutenberg's apparatus, URLs,
numbers in the shape of apparatus, margins.

Each rule is `rule(text) -> (new_text, count)`, tested on what it must remove AND on verse it
must leave alone (atomlib.data.clean runs them in order and counts). Numeric noise is numbers in
the shape of apparatus: a line that is only a number (page number), a footnote marker [12], a
[Footnote 3: ...] body, a verse number in the left gutter or at the far right of a line. Numbers
inside verse stay.

This module also holds how every rule removes things (remove_matches, drop_lines): matches are
first replaced by a mark, so a line left holding only marks goes whole (no blank line where
"[Chorus]" was) while other marks vanish inline.
"""

from __future__ import annotations

import html
import html.entities
import re
import unicodedata

# --- how a rule removes things -------------------------------------------------------

# Each rule removes its matches by first replacing them with this mark; a line left holding
# only marks is dropped whole (no blank line where "[Chorus]" was), other marks vanish inline.
# NUL never survives the unicode rule, so it cannot clash with text.
_MARK = "\x00"
_MARK_LINE = re.compile(r"(?m)^[ \t]*\x00(?:[ \t]*\x00)*[ \t]*(?:\n|\Z)")
_MARK_LEAD = re.compile(r"(?m)^([ \t]*)\x00[ \t]*")  # "(x2) Burn" -> "Burn", indentation kept
_MARK_INLINE = re.compile(r"[ \t]*\x00")


def _unmark(text: str) -> str:
    return _MARK_INLINE.sub("", _MARK_LEAD.sub(r"\1", _MARK_LINE.sub("", text)))


def remove_matches(rx: re.Pattern, text: str, repl=_MARK) -> tuple[str, int]:
    """Remove every match of `rx` (lines left empty go too); return (text, matches)."""
    text, n = rx.subn(repl, text)
    return (_unmark(text) if n else text), n


def drop_lines(text: str, is_noise) -> tuple[str, int]:
    """Remove the lines for which is_noise(line) is true; return (text, lines removed)."""
    lines = text.split("\n")
    kept = [ln for ln in lines if not is_noise(ln)]
    return "\n".join(kept), len(lines) - len(kept)


# --- rule: HTML tags and entities ------------------------------------------------------

_BREAK_TAG = re.compile(r"<br\s*/?>|</(?:p|div|li|h[1-6])\s*>", re.I)
_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>", re.S)
_ENTITY = re.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def html_tags_entities(text):
    """HTML tags (<br> and block ends become newlines, the rest vanish) and entities (&amp; -> &)."""
    text, n_br = _BREAK_TAG.subn("\n", text)
    text, n_tag = _TAG.subn("", text)
    n_ent = 0

    def unescape(m):
        nonlocal n_ent
        ent = m.group(0)
        if not (ent[1] == "#" or ent[1:] in html.entities.html5):  # &notanentity; is text, not "¬anentity;"
            return ent
        n_ent += 1
        return html.unescape(ent)

    text = _ENTITY.sub(unescape, text)
    return text, n_br + n_tag + n_ent


# --- rule: whitespace and Unicode ------------------------------------------------------

_CRLF = re.compile(r"\r\n?")
_VT_FF = re.compile(r"[\x0b\x0c\u2028\u2029]")
_ODD_SPACE = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")  # nbsp + typographic spaces
_INVISIBLE = re.compile(r"[\u200b-\u200f\u2060\ufeff\u00ad\x00-\x08\x0e-\x1f\x7f]")  # zero-width, BOM, soft hyphen, controls
_TRAILING_WS = re.compile(r"(?m)[ \t]+$")
_BLANK_RUN = re.compile(r"\n{3,}")


def unicode_whitespace(text):
    """NFC; CRLF/CR -> LF; odd spaces -> ' '; zero-width chars, BOM, controls removed; no
    trailing spaces; at most one blank line in a row."""
    n = 0
    nfc = unicodedata.normalize("NFC", text)
    if nfc != text:
        n += sum(a != b for a, b in zip(text.split("\n"), nfc.split("\n"))) or 1
    text = nfc
    for rx, repl in ((_CRLF, "\n"), (_VT_FF, "\n"), (_ODD_SPACE, " "), (_INVISIBLE, ""),
                     (_TRAILING_WS, ""), (_BLANK_RUN, "\n\n")):
        text, k = rx.subn(repl, text)
        n += k
    return text, n


def tidy(text: str) -> str:
    """The layout left after removals: no trailing spaces, no runs of blank lines, no blank ends."""
    text = _BLANK_RUN.sub("\n\n", _TRAILING_WS.sub("", text))
    return text.strip("\n")


# --- rule: Project Gutenberg header and footer -----------------------------------------

# "*** START OF THIS PROJECT GUTENBERG EBOOK X ***", "***START OF THE PROJECT GUTENBERG EBOOK",
# and the 1990s "*END*THE SMALL PRINT! ..." that closes the old licence header.
_PG_START = re.compile(r"^[^\w\n]{0,10}START\b[^\n]{0,40}PROJECT[ \t]+GUTENBERG[^\n]*$"
                       r"|^[^\w\n]{0,10}END\W{1,5}THE[ \t]+SMALL[ \t]+PRINT[^\n]*$", re.I | re.M)
# "*** END OF THIS PROJECT GUTENBERG EBOOK", "End of the Project Gutenberg EBook of X",
# "End of Project Gutenberg's X", and an old licence that starts after the text.
_PG_END = re.compile(r"^[^\w\n]{0,10}END\b[^\n]{0,20}PROJECT[ \t]+GUTENBERG[^\n]*$"
                     r"|^[^\w\n]{0,10}START\W{1,5}THE[ \t]+SMALL[ \t]+PRINT[^\n]*$", re.I | re.M)
# Boilerplate paragraphs near either end of the body: anything naming Project Gutenberg, its
# sites or "etext", and, right after the start marker, "Produced by ..." / transcriber paragraphs.
_PG_PARA = re.compile(r"project\s+gutenberg|gutenberg\.(?:org|net)|pgdp\.net|pglaf|\be-?texts?\b", re.I)
_PG_CREDIT_PARA = re.compile(r"\s*(?:produced\s+by|this\s+e-?(?:book|text)\s+was\s+(?:produced|prepared)|"
                             r"e-?text\s+(?:prepared|scanned)\s+by|transcriber'?s?\s+notes?|transcribed\s+(?:by|from))", re.I)
_PG_EDGE = 40  # paragraphs at each end of the body that may be boilerplate


def gutenberg_header_footer(text):
    """Project Gutenberg header (up to the START marker) and footer (from the END marker or the
    older 'End of the Project Gutenberg EBook' line), plus PG boilerplate paragraphs left inside."""
    if not re.search("gutenberg", text, re.I):
        return text, 0
    n = 0
    start, end = _PG_START.search(text), _PG_END.search(text)
    if start and not (end and end.start() < start.start()):  # a start marker after the footer is licence text
        text, n = text[start.end():], n + 1
        end = _PG_END.search(text)
    if end:
        text, n = text[:end.start()], n + 1
    if not n:
        return text, 0
    paras = re.split(r"\n[ \t]*\n", text.strip("\n"))
    edge = lambda i: i < _PG_EDGE or i >= len(paras) - _PG_EDGE
    kept = [p for i, p in enumerate(paras)
            if not (edge(i) and _PG_PARA.search(p) or i < 5 and _PG_CREDIT_PARA.match(p))]
    return "\n\n".join(kept), n + len(paras) - len(kept)


def gutenberg_meta(text: str) -> dict:
    """Title and author from a Project Gutenberg header ({} when it has none)."""
    head = text[:20000].replace("\r\n", "\n").lstrip("\ufeff")
    start = _PG_START.search(head)
    head = head[:start.start()] if start else head[:5000]
    meta = {}
    title = re.search(r"^Title:[ \t]*(\S[^\n]*(?:\n[ \t]+\S[^\n]*)*)", head, re.M)
    if title:
        meta["title"] = " ".join(title.group(1).split())
    author = re.search(r"^Author:[ \t]*(\S[^\n]*)", head, re.M)
    if author:
        meta["author"] = author.group(1).strip()
    first = re.search(r"Project Gutenberg(?:'s)?[ \t]+(?:E-?Book|E-?text)?[ \t]*(?:of[ \t]+)?([^\n]+?)(?:,[ \t]+by[ \t]+([^\n]+))?[ \t]*$",
                      head.split("\n", 1)[0], re.I)
    if first and "title" not in meta and first.group(1).strip():
        meta["title"] = first.group(1).strip()
    if first and "author" not in meta and first.group(2):
        meta["author"] = first.group(2).strip()
    return meta



# --- rule: URLs and e-mails --------------------------------------------------------------

_TLD = r"(?:com|net|org|info|biz|co\.uk|de|fr|ru|nl|se|no|fi|pl|it|es|gr|br|cz|at|ch)"
_URL_CORE = (r"(?:https?://|ftp://|www\.)[^\s<>\"'\])}]*[^\s<>\"'\])}.,;:!?]"
             r"|(?:mailto:)?[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
             rf"|\b[\w-]+(?:\.[\w-]+)*\.(?-i:{_TLD})(?![\w'’-])(?:/[^\s<>\"']*)?")  # bare "site.com"
_URL = re.compile(rf"<\s*(?:{_URL_CORE})\s*>|\(\s*(?:{_URL_CORE})\s*\)|\[\s*(?:{_URL_CORE})\s*\]|(?:{_URL_CORE})", re.I)
_URL_HINT = re.compile(rf"://|www\.|@|\.{_TLD}\b", re.I)  # cheap: only lines with one of these are searched


def urls_emails(text):
    """URLs (http, www., bare domains like site.com) and e-mail addresses, with their brackets."""
    if not _URL_HINT.search(text):
        return text, 0
    lines, n = text.split("\n"), 0
    for i, ln in enumerate(lines):
        if _URL_HINT.search(ln):
            lines[i], k = _URL.subn(_MARK, ln)
            n += k
    text = "\n".join(lines)
    return (_unmark(text) if n else text), n


# --- rule: numeric noise -------------------------------------------------------------------

_FOOTNOTE_BODY = re.compile(r"\[[ \t]*footnote\b[^\]]{0,5000}\]", re.I)        # [Footnote 3: ... ] (multi-line)
_FOOTNOTE_MARK = re.compile(r"[\[{](?:\d{1,4}[a-z]?|(?:pg|page|p\.)[ \t]*\d{1,4})[\]}]"  # [12], [Pg 7], {7}
                            r"|(?<=[^\W\d_])[¹²³⁰⁴⁵⁶⁷⁸⁹]+", re.I)                       # moon¹
_NUMBER_LINE = re.compile(r"[ \t]*(?:[-–—(\[{][ \t]*)?(?:(?:page|p\.|pg\.?)[ \t]*)?\d{1,4}\.?(?:[ \t]*[-–—)\]}])?[ \t]*", re.I)
_RIGHT_NUMBER = re.compile(r"(?<=\S)[ \t]{3,}_?\d{1,4}[ \t]*$")       # "Or pace the floor        320", "... _55"
_GUTTER_INDENTED = re.compile(r"([ \t]{2,})(\d{1,4})([ \t]+)(?=[^\W\d_])")  # "       30 As himself he had bidden"
_GUTTER_COL0 = re.compile(r"\d{1,4}(?:\t+|[ ]{2,})(?=[^\W\d_])")              # "10   And the night came"
_VERSE_REF = re.compile(r"(?:\d{1,3}:\d{1,3}:\d{1,3}|_\d{1,4})[ \t]+(?=\S)")  # "66:001:001 The Revelation", "_167 note"


def _numbers_in_line(ln: str):
    """(line, or None to drop it; numbers removed) for the line-shaped numeric noise."""
    if not ln or not (ln[-1].isdigit() or ln[-1] in ".-–—)]}" or ln[0].isdigit() or ln[0] in " \t_"):
        return ln, 0  # cheap exit for most lines
    if _NUMBER_LINE.fullmatch(ln):
        return None, 1
    n = 0
    if ln[-1].isdigit():
        ln, n = _RIGHT_NUMBER.subn("", ln)
    if ln[:1].isdigit() or ln[:1] == "_":
        m = _VERSE_REF.match(ln) or _GUTTER_COL0.match(ln)
        if m:
            ln, n = ln[m.end():], n + 1
    elif ln[:2].isspace():
        m = _GUTTER_INDENTED.match(ln)
        if m:  # blank the number out: the verse keeps its own indentation
            ln, n = m.group(1) + " " * len(m.group(2)) + m.group(3) + ln[m.end():], n + 1
    return ln, n


def numeric_noise(text):
    """Page numbers and number-only lines, footnote markers [12] and [Footnote N: ...] bodies,
    page markers [Pg 7], verse numbers in the left gutter or right margin, Bible verse refs."""
    text, n = remove_matches(_FOOTNOTE_BODY, text)
    text, k = remove_matches(_FOOTNOTE_MARK, text)
    out = []
    for ln in text.split("\n"):
        ln, j = _numbers_in_line(ln)
        k += j
        if ln is not None:
            out.append(ln)
    return "\n".join(out), n + k


# --- rule: leading indentation ---------------------------------------------------------------

_INDENT = re.compile(r"(?m)^[ \t]+(?=\S)")


def leading_indentation(text):
    """Spaces and tabs at the start of a line: printed verse indents alternate lines, runover
    lines and speakers' names, and a model trained on it spends its first characters copying the
    margins. The words and the line breaks stay; only the margin goes."""
    return _INDENT.subn("", text)
