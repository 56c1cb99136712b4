"""Cleaning rules for a lyric site's noise: placeholders, section and repeat markers, metadata
lines, credits, and the site's own apparatus (track lengths, numbered track headings, album
headers, requests for corrections).

Each rule is `rule(text) -> (new_text, count)`, tested on what it must remove AND on verse it
must leave alone (atomlib.data.clean runs them in order and counts). A cleaner that is too eager
eats verse ("By the river of blood we stand", "The words of the dead"), so:

- A rule removes a whole line only when the WHOLE line has the shape of noise: a credit line
  needs a credit word (lyrics, music, words, arranged, thanks, submitted, corrections, ...) in a
  credit shape ("Lyrics by Name", "Music: Name", "Thanks to Name for the lyrics"), with a
  name-like tail (capitalised words). "by" alone is never enough; a line that merely contains
  "music" or "words" stays.
- A bracket is removed only when its content is a known marker or placeholder: section names
  ([Chorus], (Verse 2), [Bridge: Name]), repeat counts ((x2), x3, (repeat)), placeholders
  ([Instrumental], [Lyrics not available], [Illustration: ...]). Any other bracketed text
  ("[she whispered]", "[_Exit._]", "(and the sky wept)") is verse, stage direction or aside: it stays.
"""

from __future__ import annotations

import re

from atomlib.data.text_rules import drop_lines, remove_matches


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
    text, n = remove_matches(_PLACEHOLDER, text)
    text, k = drop_lines(text, _PLACEHOLDER_LINE.fullmatch)
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
    text, n = drop_lines(text, lambda ln: len(ln) < 100 and _may_be_marker(ln) and _SECTION_LINE.fullmatch(ln))
    text, k = remove_matches(_REPEAT_INLINE, text)
    text, j = remove_matches(_REPEAT_TAIL, text)
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
    return drop_lines(text, _is_metadata_line)


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
    return drop_lines(text, is_credit_line)


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
    text, n = drop_lines(text, lambda ln: ":" in ln and bool(_DURATION_LINE.fullmatch(ln)))
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
    return drop_lines(text, _is_track_heading)


_ALBUM_HEADER = re.compile(r"[ \t]*(?:album|ep|demo|single|compilation|live(?:[ \t]+album)?|split|boxset|"
                           r"mini-album|other[ \t]+songs|bonus[ \t]+tracks?)[ \t]*:[ \t]*[\"“][^\"”\n]{1,150}[\"”]"
                           r"[ \t]*(?:\([^)\n]{0,40}\))?[ \t]*", re.I)


def album_headers(text):
    """The site's album header: album: "Title" (1994), EP: "Title" (2001), demo: "Title"."""
    return drop_lines(text, lambda ln: ('"' in ln or "“" in ln) and bool(_ALBUM_HEADER.fullmatch(ln)))


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
    return drop_lines(text, lambda ln: len(ln) <= 200 and bool(_CORRECTIONS.fullmatch(ln)))
