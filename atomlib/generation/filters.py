"""The output filter pipeline: named stages that clean a generation, applied in order.

A model trained on scraped lyrics and Gutenberg verse learns the page furniture too: album
headers, "Thanks to ... for sending these lyrics", "[Chorus]", "[Illustration]". A sample is
also cut wherever max_new_tokens fell, often mid-word or mid-line, and small models loop.
Each stage below fixes one of these and reports what it changed:

    strip_artifacts      dataset furniture: metadata headers, credits, [markers], placeholders,
                         Gutenberg-isms, URLs, stray leading punctuation
    trim_truncated       a word cut at the start (when there is no prompt to complete) or at the end
    collapse_repeats     repeated lines, repeated word n-grams, runs of one character
    normalize_whitespace spaces, blank lines, line ends, spaces before punctuation
    cut_boundary         end at a natural verse or sentence boundary
    min_quality          reject what is too short, mostly non-letters or degenerate (with a reason)

    result = apply_filters(text, prompt=None)
    result.text, result.passed, result.reason, [s.name for s in result.stages if s.changed]

Stages are plain functions `stage(text, ctx) -> (text, removed, detail)`; STAGES lists them
in order, so a caller can run a subset (`apply_filters(text, stages=[...])`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import pronouncing


@dataclass
class StageRecord:
    name: str
    changed: bool
    removed: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass
class FilterResult:
    text: str
    stages: list[StageRecord]
    passed: bool
    reason: str | None = None

    @property
    def artifact_free(self) -> bool:
        """True when strip_artifacts found nothing to remove."""
        return not any(s.removed for s in self.stages if s.name == "strip_artifacts")

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def changed_stages(self) -> list[str]:
        return [s.name for s in self.stages if s.changed]

    @property
    def verdict(self) -> str:
        """"passed", or "rejected: <reason>"."""
        return "passed" if self.passed else f"rejected: {self.reason}"

    def rows(self) -> list[dict]:
        """One row per stage, in order: its name, whether it changed the text, what it removed, why."""
        return [{"stage": s.name, "changed": s.changed, "removed": s.removed, "detail": s.detail} for s in self.stages]


@dataclass
class FilterContext:
    """What the stages may know besides the text itself."""

    prompt: str | None = None
    complete: bool | None = None  # True: the caller knows the text ended cleanly (stop string, end-of-text)
    min_words: int = 3
    ended_at_break: bool = False  # the last line had a line break after it (set before whitespace is normalised)


# --- words -------------------------------------------------------------------------------------

WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")

# Short function words and interjections a dictionary lookup should never reject, plus
# verse words older than the pronouncing dictionary (thee, thou, o'er ...).
_ALWAYS_WORDS = set("""a i o an as at be by do go he if in is it me my no of oh on or so to up us we ye
thee thou thy thine hath doth art shalt wilt ere o'er e'er ne'er 'tis 'twas oft nay yea aye lo alas
ah ay ha ho hey yeah whoa na la""".split())


@lru_cache(maxsize=1)
def _dictionary() -> frozenset[str]:
    """English words (CMU pronouncing dictionary via `pronouncing`, ~126k entries)."""
    try:
        pronouncing.init_cmu()
        return frozenset(w.lower() for w in pronouncing.lookup)
    except Exception:  # no dictionary: every word counts as known, so nothing is trimmed
        return frozenset()


def is_word(token: str) -> bool:
    """Whether token (letters, maybe an apostrophe) is an English word, or looks like a name."""
    w = token.lower().strip("'")
    if not w:
        return False
    words = _dictionary()
    if not words or w in _ALWAYS_WORDS or w in words:
        return True
    # plurals, possessives and -ing/-ed forms of known words
    for suffix in ("'s", "s", "es", "ed", "ing", "'d", "n't", "st", "eth"):
        if w.endswith(suffix) and w[: -len(suffix)] in words:
            return True
    return False


# --- stage 1: strip dataset artifacts ---------------------------------------------------------

_META_KEYS = (r"artist|band|album|track(?:\s*list)?|song|title|genre|year|released?|label|lyrics|music|words|"
              r"composer|producer|performed by|line-?up|cd|disc|length|duration|format|country|author|source")
_RULES: list[tuple[str, re.Pattern]] = [
    # whole lines of page furniture (each takes its line break along)
    ("metadata header", re.compile(rf"^[ \t]*(?:{_META_KEYS})[ \t]*(?:\d+[ \t]*)?:[ \t]*[^\n]{{0,80}}$\n?", re.I | re.M)),
    ("track number", re.compile(r"^[ \t]*(?:track|cd|disc|side)[ \t]*#?[ \t]*\d+\b[^\n]{0,60}$\n?", re.I | re.M)),
    ("tracklist entry", re.compile(r"^[ \t]*\d{1,2}\.[ \t]+[A-Z][^\n]{0,60}$\n?", re.M)),
    ("credits", re.compile(r"^[ \t]*(?i:(?:all[ \t]+)?(?:lyrics|music|words|arrangements?|arranged|written|composed|"
                           r"produced|performed|transcribed|submitted|translated|corrected)(?:[ \t]+and[ \t]+\w+)?"
                           r"(?:[ \t]+(?:written|composed|arranged))?[ \t]+by)[ \t]*:?[ \t]+"
                           r"(?:[A-Z0-9][\w.'&-]*(?:[ \t]*(?:,|&|and)?[ \t]*[A-Z0-9][\w.'&-]*){0,5})[ \t]*\.?[ \t]*$\n?", re.M)),
    ("thanks line", re.compile(r"^[^\n]*\bthanks?[ \t]+(?:you[ \t]+)?to\b[^\n]*\b(?:sending|submitting|correcting|"
                               r"these lyrics|this song|the lyrics|transcrib\w*)\b[^\n]*$\n?", re.I | re.M)),
    ("site / url", re.compile(r"^[^\n]*(?:https?://|www\.|darklyrics|\.com\b|\.org\b)[^\n]*$\n?", re.I | re.M)),
    ("gutenberg", re.compile(r"^[^\n]*(?:project gutenberg|\*{3}[ \t]*(?:start|end) of|end of (?:the|this) "
                             r"(?:project|e-?book)|e-?text prepared|transcriber'?s note)[^\n]*$\n?", re.I | re.M)),
    ("section heading", re.compile(r"^[ \t]*(?:(?:book|canto|chapter|part|stanza|section|act|scene)[ \t]+"
                                   r"(?:[IVXLC]+|\d+|the[ \t]+\w+)\.?|[IVXLC]{1,6}\.)[ \t]*$\n?", re.I | re.M)),
    # inline markers
    ("bracketed marker", re.compile(r"\[[^\[\]\n]{0,80}\]")),
    ("bracketed marker", re.compile(r"\((?:[ \t]*(?:x[ \t]*\d+|\d+[ \t]*x|repeat[^()\n]{0,30}|chorus[^()\n]{0,20}|"
                                    r"(?:pre-?)?chorus|verse[ \t]*\d*|bridge|intro|outro|instrumental|solo[^()\n]{0,30}|"
                                    r"spoken|whispered|screams?|guitar solo|interlude|refrain)[ \t]*:?[ \t]*)\)", re.I)),
    ("repeat marker", re.compile(r"(?<=\S)[ \t]+[x×][ \t]?\d\b|(?<=\S)[ \t]+\d[ \t]?[x×]\b", re.I)),
    ("placeholder line", re.compile(r"^[ \t]*(?:instrumental|\*?[ \t]*instrumental[ \t]*\*?|no lyrics|"
                                    r"lyrics not available|"
                                    r"chorus|repeat chorus)[ \t]*[.!]?[ \t]*$\n?", re.I | re.M)),
    ("end-of-text token", re.compile(r"<\|endoftext\|>")),
]
_ITALIC = re.compile(r"(?<![\w_])_([^_\n]{1,80})_(?![\w_])")  # Gutenberg's _italics_
# stray punctuation where a line starts: "] the raven", ", and" (a sample cut out of a sentence);
# the first line of a continuation may rightly start with ", and ..." after its prompt
_LEADING_PUNCT = re.compile(r"\A[ \t]*[\]\)\}>|:;,.*/\\][\]\)\}>|:;,*/\\ \t]*(?!\.)")
_LEADING_CLOSER = re.compile(r"\A[ \t]*[\]\)\}>|*/\\][\]\)\}>|*/\\ \t]*")
_LINE_LEADING_PUNCT = re.compile(r"(?<=\n)[ \t]*[\]\)\}|;:,*/\\]+[ \t]*")


def strip_artifacts(text: str, ctx: FilterContext):
    removed: list[str] = []
    kinds: list[str] = []

    def cut(match, kind):
        if match.group(0).strip():
            removed.append(match.group(0).strip())
            kinds.append(kind)
        return ""

    def unwrap(match):
        removed.append(match.group(0))
        kinds.append("italics markup")
        return match.group(1)

    for kind, rule in _RULES:
        text = rule.sub(lambda m, k=kind: cut(m, k), text)
    text = _ITALIC.sub(unwrap, text)
    if "_" in text:  # what is left of Gutenberg's _italics_ after a cut: never part of a verse
        removed.extend("_" * text.count("_"))
        kinds.extend(["italics markup"] * text.count("_"))
        text = text.replace("_", "")
    text = _LINE_LEADING_PUNCT.sub(lambda m: cut(m, "stray punctuation"), text)
    first = _LEADING_CLOSER if ctx.prompt else _LEADING_PUNCT
    text = first.sub(lambda m: cut(m, "stray punctuation"), text, count=1)
    detail = ", ".join(f"{k} x{kinds.count(k)}" for k in dict.fromkeys(kinds)) if kinds else "nothing to strip"
    return text, removed, detail


# --- stage 2: truncated words -----------------------------------------------------------------


def trim_truncated(text: str, ctx: FilterContext):
    removed: list[str] = []
    notes: list[str] = []
    prompt = ctx.prompt or ""
    # start: a fragment like "ness of the night" when nothing before it completes the word
    m = re.match(r"\A([ \t]*)([A-Za-z']+)(?![A-Za-z'])", text)
    continues_prompt = bool(prompt) and prompt[-1:].isalpha()
    if m and not prompt and m.group(2)[0].islower() and not is_word(m.group(2)):
        removed.append(m.group(2))
        notes.append(f"dropped a cut word at the start ({m.group(2)!r})")
        text = text[m.end():].lstrip(" \t")
    # end: a last word with no space or punctuation after it, that is not a word
    if ctx.complete is not True:
        m = re.search(r"([A-Za-z']+)\Z", text)
        if m and (m.start() > 0 or not continues_prompt):
            word = m.group(1)
            whole = word
            if m.start() == 0 and continues_prompt:  # the whole text completes the prompt's last word
                whole = re.search(r"[A-Za-z']*\Z", prompt).group(0) + word
            if not is_word(whole):
                removed.append(word)
                notes.append(f"dropped a cut word at the end ({word!r})")
                text = text[:m.start()].rstrip(" \t,;:-")
    return text, removed, "; ".join(notes) or "no cut words"


# --- stage 3: repeats -------------------------------------------------------------------------


def _norm_line(line: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", line.lower()))


def _collapse_ngrams(line: str, removed: list[str]) -> str:
    """A word n-gram (n = 1..8) said three or more times in a row is said once."""
    tokens = line.split(" ")
    keys = [re.sub(r"[^a-z0-9']", "", t.lower()) for t in tokens]
    changed = True
    while changed:
        changed = False
        for n in range(1, 9):
            i = 0
            while i + 3 * n <= len(keys):
                gram = keys[i:i + n]
                if not any(gram):
                    i += 1
                    continue
                reps = 1
                while keys[i + reps * n:i + (reps + 1) * n] == gram:
                    reps += 1
                if reps >= 3:
                    removed.append(" ".join(tokens[i + n:i + reps * n]))
                    del tokens[i + n:i + reps * n]
                    del keys[i + n:i + reps * n]
                    changed = True
                i += 1
    return " ".join(tokens)


def collapse_repeats(text: str, ctx: FilterContext):
    removed: list[str] = []
    notes: list[str] = []
    # runs of one character: "aaaaaa" -> "aaa", "!!!!!!" -> "!!!"
    runs = re.compile(r"([^\s\d])\1{3,}")
    found = runs.findall(text)
    if found:
        removed.extend(m.group(0)[3:] for m in runs.finditer(text))
        text = runs.sub(lambda m: m.group(1) * 3, text)
        notes.append(f"{len(found)} character run(s)")
    # n-grams within a line, then whole lines
    lines = text.split("\n")
    before = len(removed)
    lines = [_collapse_ngrams(line, removed) if line.strip() else line for line in lines]
    if len(removed) > before:
        notes.append(f"{len(removed) - before} repeated n-gram run(s)")
    out: list[str] = []
    seen: dict[str, int] = {}
    dropped = 0
    for line in lines:
        key = _norm_line(line)
        prev = next((_norm_line(x) for x in reversed(out) if x.strip()), None) if key else None
        # a line said again right after itself, or a third time anywhere, goes
        if key and (key == prev or seen.get(key, 0) >= 2):
            removed.append(line.strip())
            dropped += 1
            continue
        if key:
            seen[key] = seen.get(key, 0) + 1
        out.append(line)
    if dropped:
        notes.append(f"{dropped} repeated line(s)")
    return "\n".join(out), removed, ", ".join(notes) or "no repeats"


# --- stage 4: whitespace ----------------------------------------------------------------------


def normalize_whitespace(text: str, ctx: FilterContext):
    before = text
    # whether the last line was finished (a line break after it) is only visible before this stage
    ctx.ended_at_break = text.rstrip(" \t").endswith("\n")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ").replace("\u00a0", " ")
    text = re.sub(r"[ ]{2,}", " ", text)
    text = re.sub(r"[ ]+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;!?])(?=[A-Za-z])", r"\1 ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
    return text, [], "whitespace normalised" if text != before else "already tidy"


# --- stage 5: end at a boundary ---------------------------------------------------------------

_END = re.compile(r"[.!?…;:,\"'”’)\-—]\Z")
_SENTENCE = re.compile(r"[.!?…][\"'”’)]*(?=\s|\Z)")


def cut_boundary(text: str, ctx: FilterContext):
    if not text or ctx.complete or ctx.ended_at_break or _END.search(text):
        return text, [], "ends at a boundary"
    lines = text.split("\n")
    if len(lines) > 1 and any(line.strip() for line in lines[:-1]):
        last = lines[-1]
        kept = "\n".join(lines[:-1]).rstrip()
        return kept, [last], "dropped the unfinished last line"
    ends = [m.end() for m in _SENTENCE.finditer(text)]
    if ends and len(WORD.findall(text[:ends[-1]])) >= 3:
        return text[:ends[-1]], [text[ends[-1]:].strip()], "cut after the last full sentence"
    return text, [], "one unfinished line with no sentence end: kept as is"


# --- stage 6: minimum quality ------------------------------------------------------------------


def quality_problem(text: str, min_words: int = 3) -> str | None:
    """Why text is not worth showing, or None."""
    words = WORD.findall(text)
    if not text.strip():
        return "empty"
    if len(words) < min_words:
        return f"too short ({len(words)} word{'s' if len(words) != 1 else ''}, need {min_words})"
    visible = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    if letters < 0.6 * len(visible):
        return f"mostly non-letters ({letters}/{len(visible)} letters)"
    lower = [w.lower() for w in words]
    if len(lower) >= 8 and len(set(lower)) < 0.3 * len(lower):
        return f"too repetitive ({len(set(lower))} distinct of {len(lower)} words)"
    known = sum(is_word(w) for w in words)
    if len(words) >= 4 and known < 0.5 * len(words):
        return f"mostly non-words ({known}/{len(words)} known words)"
    return None


def min_quality(text: str, ctx: FilterContext):
    problem = quality_problem(text, ctx.min_words)
    ctx.problem = problem
    return text, [], problem or "passed"


CLEAN_ENDS = ("stop", "eot")  # finish reasons after which a sample's last word and line are whole
STAGES = [strip_artifacts, trim_truncated, collapse_repeats, normalize_whitespace, cut_boundary, min_quality]
STAGE_NAMES = [f.__name__ for f in STAGES]


def apply_filters(text: str, prompt: str | None = None, *, complete: bool | None = None,
                  min_words: int = 3, stages=None) -> FilterResult:
    """Run the stages in order; return the cleaned text, a record per stage, and whether the
    result is worth showing (passed) with the reason when it is not.

    prompt: what the text continues (a cut word at the start may just complete it).
    complete: True when the caller knows the generation ended cleanly (stop string or
    end-of-text), so its last word and line are whole."""
    ctx = FilterContext(prompt=prompt, complete=complete, min_words=min_words,
                        ended_at_break=text.rstrip(" \t").endswith("\n"))  # normalize_whitespace updates it
    ctx.problem = None
    records = []
    for stage in stages or STAGES:
        new, removed, detail = stage(text, ctx)
        records.append(StageRecord(stage.__name__, new != text, [r for r in removed if r], detail))
        text = new
    if stages is not None and min_quality not in stages:
        ctx.problem = quality_problem(text, min_words)
    return FilterResult(text=text, stages=records, passed=ctx.problem is None, reason=ctx.problem)


def filter_sample(gen, prompt: str | None = None) -> FilterResult:
    """apply_filters on a engine.Generation: complete when it ended at a stop string or end-of-text."""
    return apply_filters(gen.text, prompt=prompt, complete=gen.finish_reason in CLEAN_ENDS)
