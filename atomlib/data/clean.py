"""Cleaning: raw sources -> one JSONL corpus of documents, with a count for every rule.

Why so explicit: a small GPT learns whatever it is fed, so every "Lyrics by X", "[Chorus]",
page number or Project Gutenberg licence paragraph left in the corpus is something it will
happily generate. But a cleaner that is too eager eats verse ("By the river of blood we stand",
"The words of the dead"). So cleaning is an ordered table of small named rules, each
`rule(text) -> (new_text, count)`, each tested on things it must remove AND on verse it must
leave alone, and each counted, so a notebook can show what was removed and how much.

What counts as noise (and what does not):
- A rule removes a whole line only when the WHOLE line has the shape of noise: a credit line
  needs a credit word (lyrics, music, words, arranged, thanks, submitted, corrections, ...) in a
  credit shape ("Lyrics by Name", "Music: Name", "Thanks to Name for the lyrics"), with a
  name-like tail (capitalised words). "by" alone is never enough; a line that merely contains
  "music" or "words" stays.
- A bracket is removed only when its content is a known marker or placeholder: section names
  ([Chorus], (Verse 2), [Bridge: Name]), repeat counts ((x2), x3, (repeat)), placeholders
  ([Instrumental], [Lyrics not available], [Illustration: ...]). Any other bracketed text
  ("[she whispered]", "[_Exit._]", "(and the sky wept)") is verse, stage direction or aside: it stays.
- Numeric noise is numbers in the shape of apparatus: a line that is only a number (page
  number), a footnote marker [12], a [Footnote 3: ...] body, a verse number in the left gutter
  or at the far right of a line. Numbers inside verse stay.

Documents: a .txt file is ONE document (a Gutenberg work stays whole: splitting 17 differently
laid-out books into poems/cantos is not cheap to do reliably, and `prepare` cuts long texts into
paragraph-sized pieces anyway; the train/val split there is by document). A JSONL record
(e.g. the scraper's songs.jsonl) is one document. After the rules, a document with no letter
or digit left is dropped; then exact duplicates (same text up to case and whitespace) and
near duplicates (Jaccard >= 0.8 over the sets of 3-word shingles of the whole document,
found with MinHash + LSH and confirmed exactly) are dropped, keeping the first seen. Two songs
that merely share a refrain have a low whole-document Jaccard, so both stay.
"""

from __future__ import annotations

import hashlib
import html
import html.entities
import json
import os
import re
import tempfile
import time
import unicodedata
import zlib
from collections import Counter, namedtuple
from pathlib import Path

import numpy as np

from atomlib import paths
from atomlib.errors import AtomError

# Each rule removes its matches by first replacing them with this mark; a line left holding
# only marks is dropped whole (no blank line where "[Chorus]" was), other marks vanish inline.
# NUL never survives the unicode rule, so it cannot clash with text.
_MARK = "\x00"
_MARK_LINE = re.compile(r"(?m)^[ \t]*\x00(?:[ \t]*\x00)*[ \t]*(?:\n|\Z)")
_MARK_LEAD = re.compile(r"(?m)^([ \t]*)\x00[ \t]*")  # "(x2) Burn" -> "Burn", indentation kept
_MARK_INLINE = re.compile(r"[ \t]*\x00")


def _unmark(text: str) -> str:
    return _MARK_INLINE.sub("", _MARK_LEAD.sub(r"\1", _MARK_LINE.sub("", text)))


def _remove(rx: re.Pattern, text: str, repl=_MARK) -> tuple[str, int]:
    """Remove every match of `rx` (lines left empty go too); return (text, matches)."""
    text, n = rx.subn(repl, text)
    return (_unmark(text) if n else text), n


def _drop_lines(text: str, is_noise) -> tuple[str, int]:
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


def _tidy(text: str) -> str:
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


# --- rule: placeholders ------------------------------------------------------------------

_NOT_AVAILABLE = (r"(?:the\s+)?(?:lyrics?|words|text)\s+(?:are\s+|were\s+|is\s+)?(?:not\s+(?:yet\s+)?"
                  r"(?:available|included|known|found|printed|provided|online|published|transcribed)|unavailable|unknown|missing|n/?a)\b")
_PLACEHOLDER = re.compile(
    r"[\[(][ \t]*(?:"
    # [Illustration], [Illustration 3], [Illustration: a raven ... (may span lines)]
    r"(?:illustrations?|image|picture|photo(?:graph)?|figure|fig\.|plate|frontispiece)"
    r"(?:[ \t]*\d+[a-z]?)?[ \t]*(?:[:.\-–][^\])]{0,3000})?"
    r"|instrumental\b[^\])\n]{0,40}"                                   # [Instrumental], (instrumental - 4:33)
    rf"|{_NOT_AVAILABLE}[^\])\n]{{0,30}}"                               # [Lyrics not available]
    r"|no[ \t]+(?:lyrics|words|vocals)[^\])\n]{0,30}"                   # [no lyrics available]
    r"|(?:unknown[ \t]+lyrics|silence|blank(?:[ \t]+page)?|untitled(?:[ \t]+track)?|hidden[ \t]+track"
    r"|unintelligible|inaudible|indecipherable|incomprehensible|\?+)[ \t]*"  # [silence], [?], [unintelligible]
    r")[\])]", re.I)
# the same placeholders as a whole bare line: "Instrumental", "- instrumental -", "Lyrics not available yet."
# (bare "The words are unknown." may be verse, so only "lyrics" counts here)
_PLACEHOLDER_LINE = re.compile(
    r"[ \t]*[-–*~_.]*[ \t]*(?:instrumental(?:[ \t]+(?:track|song|piece|version))?"
    r"|(?:the\s+)?lyrics?\s+(?:are\s+|were\s+|is\s+)?(?:not\s+(?:yet\s+)?(?:available|included|known|found|printed|"
    r"provided|online|published|transcribed)|unavailable|unknown|n/?a)(?:\s+(?:yet|at\s+(?:this|the)\s+(?:time|moment)|"
    r"for\s+this\s+(?:song|track)))?"
    r"|no\s+lyrics(?:\s+available)?|lyrics\s*:\s*n/?a)[ \t]*[-–*~_.!]*[ \t]*", re.I)


def placeholders(text):
    """Placeholders: [Instrumental], [Lyrics not available], [Illustration: ...] (multi-line too), [?]."""
    text, n = _remove(_PLACEHOLDER, text)
    text, k = _drop_lines(text, _PLACEHOLDER_LINE.fullmatch)
    return text, n + k


# --- rule: section and repeat markers -----------------------------------------------------

_SECTION = (r"(?:pre[- ]?chorus|post[- ]?chorus|chorus|refrain|verse|bridge|hook|intro|outro|interlude|"
            r"prelude|coda|break(?:down)?|(?:guitar|bass|drum|keyboard|piano|lead|twin)\s+solos?|solos?|"
            r"spoken(?:\s+word)?|narration|instrumental\s+break|fade(?:[- ]?(?:out|in))?)")
# unbracketed, a line must be one of these safer words to count as a marker ("Break" may be verse)
_SECTION_BARE = (r"(?:pre[- ]?chorus|post[- ]?chorus|chorus|refrain|bridge|intro|outro|interlude|breakdown|"
                 r"(?:guitar|bass|drum|keyboard|lead|twin)\s+solos?|solos?|verse)")
_ORDINAL = r"(?:(?:\d{1,2}(?:st|nd|rd|th)|first|second|third|fourth|fifth|last|final)\s+)"
_NUMBER = r"(?:\s*#?\s*(?:\d{1,2}|[ivx]{1,4}|one|two|three|four|five)\b)"
_COUNT = r"(?:[x×]\s*\d{1,2}|\d{1,2}\s*[x×]|\d{1,2}\s+times|twice)"
_REPEAT = rf"(?:repeat(?:\s+(?:{_ORDINAL}?{_SECTION}{_NUMBER}?|all|(?:un)?till?\s+fade|to\s+fade|{_COUNT}))*)"


def _head(section):
    # "Chorus", "2nd Verse", "Verse 2", "Repeat chorus", "Chorus x2", "Chorus (repeat)"
    return (rf"(?:repeat\s+)?{_ORDINAL}?{section}{_NUMBER}?(?:\s+repeat)?"
            rf"(?:\s*[(\[]?\s*(?:{_COUNT}|repeat)\s*[)\]]?)?")


# a whole line that is a marker (matched line by line, so \s never crosses a line end)
_SECTION_LINE = re.compile(
    r"\s*(?:"
    rf"[\[({{<]\s*(?:{_head(_SECTION)}|{_REPEAT}|{_COUNT})\s*(?:[:\-–]\s*[^\])}}>]{{0,60}})?[\])}}>]"  # [Chorus: Name], (x2)
    rf"|[*_~]*\s*(?:{_head(_SECTION_BARE)}|{_REPEAT}|[x×]\s*\d{{1,2}}|\d{{1,2}}\s*[x×])\s*:?\s*[*_~]*"  # Chorus:, *Repeat chorus x2*
    r")\s*:?\s*", re.I)
# a repeat count after a lyric line: "I am the storm (x2)", "... [repeat 3 times]", "... x4"
_REPEAT_INLINE = re.compile(rf"[(\[][ \t]*(?:{_COUNT}|repeat(?:[ \t]+{_COUNT})?|{_COUNT}[ \t]+repeat)[ \t]*[)\]]", re.I)
_REPEAT_TAIL = re.compile(r"(?m)(?<=\S)[ \t]+[x×][ \t]?\d{1,2}[ \t]*$")


_MARKER_STARTS = ("pre", "pos", "cho", "ref", "ver", "bri", "hoo", "int", "out", "cod", "bre", "gui",
                  "bas", "dru", "key", "pia", "lea", "twi", "sol", "spo", "nar", "ins", "rep", "fir", "sec",
                  "thi", "fou", "fif", "las", "fin", "one", "two", "x", "×", "0", "1", "2", "3", "4", "5", "6",
                  "7", "8", "9")


def _may_be_marker(line: str) -> bool:
    """Cheap first test: a marker line opens with a bracket or one of the marker words."""
    s = line.lstrip(" \t*_~")
    return s[:1] in ("[", "(", "{", "<") or s[:3].lower().startswith(_MARKER_STARTS)


def section_repeat_markers(text):
    """Section and repeat markers: [Chorus], (Verse 2), Chorus:, [Bridge: Name], (x2), x3, (repeat)."""
    text, n = _drop_lines(text, lambda ln: len(ln) < 100 and _may_be_marker(ln) and _SECTION_LINE.fullmatch(ln))
    text, k = _remove(_REPEAT_INLINE, text)
    text, j = _remove(_REPEAT_TAIL, text)
    return text, n + k + j


# --- rule: metadata lines -----------------------------------------------------------------

_META_KEY = (r"(?:artist|band|album|title|track(?:\s*(?:no\.?|number|#))?|year|released?|release\s+date|genre|"
             r"label|record\s+label|length|duration|running\s+time|recorded(?:\s+at)?|"
             r"catalog(?:ue)?(?:\s+(?:no\.?|number|#))?|line-?up|track\s*list(?:ing)?)")
_META_LINE = re.compile(
    r"[ \t]*[\[(*_]*(?:"
    rf"{_META_KEY}[ \t]*:(?:[ \t].{{0,120}})?"                                   # Artist: X, Album: Y, Year: 1990
    r"|track[ \t]*#?[ \t]*\d{1,3}(?:[ \t]*(?:of|/)[ \t]*\d{1,3})?(?:[ \t]*[:.\-–)][ \t]*.{0,120})?"  # Track 3, Track 3: Title
    r"|(?:cd|disc|disk)[ \t]*#?[ \t]*\d{1,2}(?:[ \t]*[:.\-–][ \t]*.{0,120})?"      # CD 2, Disc 1: Name
    r"|side[ \t]+(?:[ab12]|one|two)[ \t]*:?"                                    # Side A
    r")[ \t]*[\])*_]*[ \t]*", re.I)


def _is_metadata_line(line: str) -> bool:
    # keys are written as headers ("Album:", "ALBUM:"); a lower-case "single: your ..." is verse
    s = line.lstrip(" \t[(*_")
    return s[:1].isupper() and len(line) < 160 and bool(_META_LINE.fullmatch(line))


def metadata_lines(text):
    """Metadata lines: 'Artist: X', 'Album: Y', 'Year: 1990', 'Track 3', 'Track 3: Title', 'CD 2'."""
    return _drop_lines(text, _is_metadata_line)


# --- rule: credits and attribution ----------------------------------------------------------

_CREDIT_WORD = r"(?:lyrics?|music|words|arrangements?|arranged)"
_CREDIT_VERB = r"(?:written|composed|arranged|performed|adapted|translated|transcribed)"
_CREDIT_HEAD = (rf"(?:(?:all|additional|original)\s+)?{_CREDIT_WORD}(?:\s*(?:and|&|/|\+|,)\s*{_CREDIT_WORD})*"
                rf"(?:\s+{_CREDIT_VERB}(?:\s*(?:and|&|,)\s*{_CREDIT_VERB})*)?")
_OPEN, _CLOSE = r"\s*[\[({*_~-]*\s*", r"\s*[\])}*_~.-]*\s*"
# every credit shape starts a line with one of these words: a cheap test before the real ones
_CREDIT_START = re.compile(r"\s*[\[({*_~-]*\s*(?:all|additional|original|lyric|music|words|arrang|song|track|text|"
                           r"submit|correct|sent|transcri|typed|posted|contributed|many|special|big|huge|great|thank|thx)", re.I)
# "Lyrics by X", "Music: X", "Words and music by X", "All lyrics written by X" (tail checked below)
_CREDIT_BY = re.compile(rf"{_OPEN}{_CREDIT_HEAD}\s*(?:\bby\b|:|-|–)\s*(?P<tail>.{{1,120}}?){_CLOSE}", re.I)
# "Lyrics:" / "Music:" alone, as a capitalised header ("      words:" ending a verse line stays)
_CREDIT_BARE = re.compile(rf"{_OPEN}(?-i:Lyrics?|LYRICS?|Music|MUSIC|Credits|CREDITS)\s*:{_CLOSE}", re.I)
# "Submitted by X", "Corrections by X", "Lyrics submitted by X": unambiguous, no tail check
_CREDIT_SUBMIT = re.compile(rf"{_OPEN}(?:(?:lyrics?|song|track|text|words)\s+)?(?:submitted|corrections?|sent\s+in)"
                            rf"\s*(?:\bby\b|:|from)\s*.{{1,120}}", re.I)
# "Corrected by X", "Transcribed by X": could be verse, so the tail must look like a name
_CREDIT_VERBED = re.compile(rf"{_OPEN}(?:(?:lyrics?|song|track|text|words)\s+)?(?:corrected|transcribed|typed|posted|"
                            rf"contributed)\s*(?:\bby\b|:)\s*(?P<tail>.{{1,120}}?){_CLOSE}", re.I)
# "Thanks to X for sending these lyrics", "Special thanks to X for the corrections"
_THANKS = re.compile(r"\s*[\[({*_~-]*\s*(?:(?:many|special|big|huge|great)\s+)?(?:thanks|thank\s+you|thx|thanx)\b", re.I)
_THANKS_CREDIT = re.compile(r"\b(?:lyrics?|corrections?|correcting|transcri\w+|submi\w+|tracks?\s*#?\s*\d+|tracks)\b"
                            r"|@|https?://|www\.", re.I)
# name-like tails: every word capitalised, a number, or a glue word ("Lyrics by The Dead" is a credit)
_NAME_GLUE = {"and", "by", "of", "the", "de", "da", "del", "di", "van", "von", "der", "den", "la", "le", "du", "y",
              "feat", "ft", "featuring", "with", "except", "on", "all", "additional", "lyrics", "lyric", "music",
              "words", "arranged", "arrangement", "arrangements", "written", "composed", "performed", "traditional",
              "trad", "unknown", "n/a", "x", "&", "adapted", "translated", "transcribed", "track", "tracks"}
_WORDS = re.compile(r"[^\W_][\w'’.\-/]*")


def _looks_like_names(tail: str) -> bool:
    words = _WORDS.findall(tail)
    if not words or len(words) > 14:
        return False
    return all(w[0].isupper() or w[0].isdigit() or w.lower().rstrip(".") in _NAME_GLUE for w in words)


def is_credit_line(line: str) -> bool:
    """True when the whole line is a credit / attribution (see `credits`)."""
    if len(line) > 200 or not _CREDIT_START.match(line):
        return False
    if _CREDIT_BARE.fullmatch(line) or _CREDIT_SUBMIT.fullmatch(line):
        return True
    m = _CREDIT_BY.fullmatch(line) or _CREDIT_VERBED.fullmatch(line)
    if m:
        return _looks_like_names(m.group("tail"))
    return bool(_THANKS.match(line) and _THANKS_CREDIT.search(line))


def credits(text):
    """Credit lines: a credit word in a credit shape ('Lyrics by X', 'Music: Y', 'Thanks to Z
    for sending these lyrics', 'Submitted by', 'Corrections by'); 'by' alone never counts."""
    return _drop_lines(text, is_credit_line)


# --- rules: a lyric site's own apparatus ------------------------------------------------------
# DarkLyrics-style pages wrap the songs in their own furniture: the album header in the site's
# format, numbered track headings, track lengths, and requests for corrections. Each is matched
# only in its exact shape, so verse that merely shares a word stays.

_DURATION_LINE = re.compile(r"[ \t]*[(\[]?[ \t]*(?:\d{1,2}:)?\d{1,2}:\d{2}[ \t]*[)\]]?[ \t]*")  # "4:57", "[04:57]"
_DURATION_END = re.compile(r"(?<=\S)(?:[ \t]*[(\[][ \t]*(?:\d{1,2}:)?\d{1,2}:\d{2}[ \t]*[)\]]"     # "Title (4:57)"
                           r"|[ \t]+[-–—][ \t]+(?:\d{1,2}:)?\d{1,2}:\d{2})[ \t]*$", re.M)         # "Title - 4:57"


def track_durations(text):
    """Track lengths: a line that is only a duration ('4:57', '(04:57)') and a duration after a
    title in brackets or after a dash ('Title (4:57)'); a time inside verse ('at 4:57 the clock
    stopped') stays."""
    text, n = _drop_lines(text, lambda ln: ":" in ln and bool(_DURATION_LINE.fullmatch(ln)))
    if ":" in text:
        text, k = _DURATION_END.subn("", text)
        n += k
    return text, n


_TRACK_HEADING = re.compile(r"[ \t]*\d{1,2}\.[ \t]+(?P<title>\S.{0,99})")
_TITLE_GLUE = {"a", "an", "and", "as", "at", "by", "de", "der", "des", "die", "du", "for", "from", "in", "into", "la",
               "le", "of", "on", "or", "over", "the", "to", "under", "upon", "von", "with", "within", "without"}


def _is_track_heading(line: str) -> bool:
    # "7. The Call of Ktulu": a track number and a title in title case ("1. I will rise" is verse)
    m = _TRACK_HEADING.fullmatch(line)
    if not m or m.group("title")[-1] in ",;:":
        return False
    words = _WORDS.findall(m.group("title"))
    # a numbered stanza of names runs on into the next line ("27. Sid and Vid, ..., Fiörm and"): not a title
    return (0 < len(words) <= 12 and (words[0][0].isupper() or words[0][0].isdigit())
            and words[-1].lower() not in _TITLE_GLUE
            and all(w[0].isupper() or w[0].isdigit() or w.lower() in _TITLE_GLUE for w in words))


def track_headings(text):
    """Numbered track headings: '7. Title', '07. Title Of The Song' (the title in title case)."""
    return _drop_lines(text, _is_track_heading)


_ALBUM_HEADER = re.compile(r"[ \t]*(?:album|ep|demo|single|compilation|live(?:[ \t]+album)?|split|boxset|"
                           r"mini-album|other[ \t]+songs|bonus[ \t]+tracks?)[ \t]*:[ \t]*[\"“][^\"”\n]{1,150}[\"”]"
                           r"[ \t]*(?:\([^)\n]{0,40}\))?[ \t]*", re.I)


def album_headers(text):
    """The site's album header: album: "Title" (1994), EP: "Title" (2001), demo: "Title"."""
    return _drop_lines(text, lambda ln: ('"' in ln or "“" in ln) and bool(_ALBUM_HEADER.fullmatch(ln)))


_CORRECTIONS = re.compile(
    r"[^\w\n]*(?:"
    r"(?:(?:any|all|your)[ \t]+)?corrections?[ \t]+(?:are[ \t]+|is[ \t]+)?(?:(?:very|always|most)[ \t]+)?"
    r"(?:welcome[d]?|appreciated)"                                                   # "corrections are welcome"
    r"|(?:please[ \t]+)?(?:send|e-?mail|mail|submit)[ \t]+(?:(?:any|all|your|me|us|the)[ \t]+)*corrections?\b"  # "send corrections to"
    r"|if[ \t]+you[ \t]+(?:find|see|notice|spot|have)\b[^\n]{0,60}\b(?:mistakes?|errors?|corrections?)\b"
    r"[^\n]{0,60}\b(?:lyrics?|let[ \t]+(?:me|us)[ \t]+know|send|correct\w*)\b"      # "if you find mistakes in the lyrics"
    r")[^\n]{0,160}", re.I)


def correction_requests(text):
    """Requests for corrections: 'Corrections are welcome', 'Send corrections to the typist',
    'If you find any mistakes in these lyrics, let me know'."""
    return _drop_lines(text, lambda ln: len(ln) <= 200 and bool(_CORRECTIONS.fullmatch(ln)))


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
    text, n = _remove(_FOOTNOTE_BODY, text)
    text, k = _remove(_FOOTNOTE_MARK, text)
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


# --- the rule table --------------------------------------------------------------------------

Rule = namedtuple("Rule", "name fn description")

RULES = [
    Rule("html_tags_entities", html_tags_entities, "HTML tags (<br> -> newline) and entities (&amp; -> &)"),
    Rule("unicode_whitespace", unicode_whitespace, "NFC, CRLF -> LF, odd spaces -> space, zero-width/BOM removed, no trailing spaces, <= 1 blank line"),
    Rule("gutenberg_header_footer", gutenberg_header_footer, "Project Gutenberg header, footer/licence and boilerplate paragraphs"),
    Rule("placeholders", placeholders, "[Instrumental], [Lyrics not available], [Illustration: ...], [?]"),
    Rule("section_repeat_markers", section_repeat_markers, "[Chorus], (Verse 2), Chorus:, (x2), x3, (repeat)"),
    Rule("metadata_lines", metadata_lines, "Artist: X, Album: Y, Year: 1990, Track 3, CD 2"),
    Rule("credits", credits, "Lyrics by X, Music: Y, Thanks to Z for the lyrics, Submitted by, Corrections by"),
    Rule("track_durations", track_durations, "track lengths: a line '4:57', 'Title (4:57)', 'Title - 4:57'"),
    Rule("track_headings", track_headings, "numbered track headings in title case: '7. Title', '07. Title'"),
    Rule("album_headers", album_headers, 'the site\'s album header: album: "Title" (1994), EP: "Title"'),
    Rule("correction_requests", correction_requests, "'Corrections are welcome', 'Send corrections to ...'"),
    Rule("urls_emails", urls_emails, "http(s)://..., www...., site.com, name@mail.org"),
    Rule("numeric_noise", numeric_noise, "page numbers, [12] footnote markers and [Footnote: ...] bodies, line/verse numbers"),
    Rule("leading_indentation", leading_indentation, "spaces and tabs at the start of a line (verse layout's margins)"),
]
DEDUP_RULE = "duplicates"  # document-level: exact + near duplicates (see Deduper)
RULE_NAMES = [r.name for r in RULES] + [DEDUP_RULE]


def rules_table() -> list[dict]:
    """The rules in the order they run, for a notebook table: name, what it removes."""
    rows = [{"rule": r.name, "removes": r.description} for r in RULES]
    rows.append({"rule": DEDUP_RULE, "removes": "exact and near-duplicate documents (3-word-shingle Jaccard >= 0.8)"})
    return rows


def clean_text(text: str) -> tuple[str, dict]:
    """Run every rule in order on one document; return (clean text, {rule name: count})."""
    counts = {}
    for rule in RULES:
        text, counts[rule.name] = rule.fn(text)
    return _tidy(text), counts


# --- duplicates ------------------------------------------------------------------------------

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


# --- reading inputs --------------------------------------------------------------------------

TEXT_FIELDS = ("lyrics", "text")


def _slug(s) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(s).lower()).strip("-") or "x"


def _expand(inputs) -> list[tuple[Path, Path]]:
    """Input paths -> [(file, root)]: .txt and .jsonl files as given, folders -> their .txt files."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    files = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.txt") if f.is_file() and not f.name.startswith("."))
            if not found:
                raise AtomError(f"input folder {p} holds no .txt files; run atom fetch first or pass .txt/.jsonl files.")
            files += [(f, p) for f in found]
        elif p.is_file():
            if p.suffix.lower() not in (".txt", ".jsonl"):
                raise AtomError(f"input {p} is neither .txt nor .jsonl; pass text files, folders of them, or a songs.jsonl.")
            files.append((p, p.parent))
        else:
            raise AtomError(f"input {p} does not exist; check the path (run atom fetch or atom scrape to make it).")
    return files


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    for enc in ("utf-8", "cp1252"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1")


def _manifest_index() -> list[dict]:
    try:
        from atomlib.data.sources import load_manifest
        return load_manifest()
    except Exception:  # the manifest only enriches metadata; cleaning works without it
        return []


def _txt_document(path: Path, root: Path, works: list[dict]) -> dict:
    raw = _read_text(path)
    rel = path.relative_to(root).with_suffix("").as_posix()
    work = next((w for w in works if path.as_posix().endswith("/" + w["file"])), None)
    meta = gutenberg_meta(raw) if re.search("gutenberg", raw[:20000], re.I) else {}
    source = "gutenberg" if meta else (work or {}).get("source", "local")
    doc = {"id": rel, "source": source, "title": meta.get("title") or (work or {}).get("title") or path.stem}
    author = meta.get("author") or (work or {}).get("author")
    if author:
        doc["author"] = author
    if work:
        doc["work_id"] = work["id"]
    doc["path"] = path.as_posix()
    doc["text"] = raw
    return doc


def _source_from_url(url) -> str | None:
    m = re.match(r"(?i)https?://(?:www\.)?([^/:.]+)", str(url or ""))
    return m.group(1).lower() if m else None


def _jsonl_documents(path: Path):
    """One document per record; the text comes from 'lyrics' or 'text', the rest is metadata."""
    any_text = False
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise AtomError(f"{path}:{lineno} is not valid JSON ({e.msg}); fix or remove that line.") from None
            if not isinstance(rec, dict):
                raise AtomError(f"{path}:{lineno} is not a JSON object; each line must be one record with a lyrics or text field.")
            field = next((k for k in TEXT_FIELDS if k in rec), None)
            any_text |= field is not None
            text = rec.pop(field) if field else ""
            source = rec.pop("source", None) or _source_from_url(rec.get("url")) or path.stem
            title = rec.pop("title", None) or ""
            rid = rec.pop("id", None)
            if not rid:
                parts = [rec.get("artist_slug") or rec.get("artist"), rec.get("album"),
                         f"{rec['track']:02d}" if isinstance(rec.get("track"), int) else rec.get("track")]
                parts = [_slug(p) for p in parts if p not in (None, "")]
                rid = "/".join([source, *parts, _slug(title)]) if parts else f"{source}/{path.stem}-{lineno}"
            yield {"id": str(rid), "source": source, "title": str(title),
                   **{k: v for k, v in rec.items() if k not in ("id", "source", "title", "text")},
                   "text": text if isinstance(text, str) else ("" if text is None else str(text))}, len(line.encode())
    if not any_text:
        raise AtomError(f"{path}: no record has a 'lyrics' or 'text' field; pass the scraper's songs.jsonl or a JSONL with text.")


def _documents(files):
    """(document, bytes read) for every input file, in order."""
    works = _manifest_index()
    for path, root in files:
        if path.suffix.lower() == ".jsonl":
            yield from _jsonl_documents(path)
        else:
            yield _txt_document(path, root, works), path.stat().st_size


# --- the command -----------------------------------------------------------------------------


def clean(inputs, out=None, progress=True, near_threshold: float = 0.8) -> dict:
    """Clean `inputs` (.txt files, folders of .txt, .jsonl with lyrics/text) into one JSONL corpus
    `out` (default data/interim/corpus.jsonl) and write clean_report.json beside it.

    Returns the report: {"rules": {rule: count}, "documents_in", "documents_out",
    "dropped_empty", "dropped_duplicates_exact", "dropped_duplicates_near", "sources", ...}.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    files = _expand(inputs)
    out = Path(out) if out is not None else paths.interim_dir() / "corpus.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    rules = Counter({name: 0 for name in RULE_NAMES})
    stats = Counter()
    sources, ids = Counter(), set()
    dedup = Deduper(near_threshold)
    total = sum(f.stat().st_size for f, _ in files)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f, \
                tqdm(total=total, unit="B", unit_scale=True, desc="clean", disable=not progress) as bar:
            for doc, nbytes in _documents(files):
                bar.update(nbytes)
                stats["documents_in"] += 1
                stats["chars_in"] += len(doc["text"])
                text, counts = clean_text(doc["text"])
                rules.update(counts)
                if not re.search(r"\w", text):
                    stats["dropped_empty"] += 1
                    continue
                dup = dedup.check(text)
                if dup:
                    stats[f"dropped_duplicates_{dup}"] += 1
                    rules[DEDUP_RULE] += 1
                    continue
                doc_id, k = doc["id"], 2
                while doc_id in ids:  # ids are unique: a clash gets -2, -3, ...
                    doc_id, k = f"{doc['id']}-{k}", k + 1
                ids.add(doc_id)
                doc.update(id=doc_id, text=text)
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
                stats["documents_out"] += 1
                stats["chars_out"] += len(text)
                sources[doc["source"]] += 1
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    report = {
        "rules": {name: rules[name] for name in RULE_NAMES},
        "documents_in": stats["documents_in"],
        "documents_out": stats["documents_out"],
        "dropped_empty": stats["dropped_empty"],
        "dropped_duplicates_exact": stats["dropped_duplicates_exact"],
        "dropped_duplicates_near": stats["dropped_duplicates_near"],
        "near_duplicate_threshold": near_threshold,
        "chars_in": stats["chars_in"],
        "chars_out": stats["chars_out"],
        "sources": dict(sources),
        "inputs": [str(p) for p in (inputs if isinstance(inputs, (list, tuple)) else [inputs])],
        "output": str(out),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    paths.write_atomic(report_path(out), (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return report


def report_path(out: str | Path) -> Path:
    """clean_report.json beside the corpus file."""
    return Path(out).parent / "clean_report.json"
