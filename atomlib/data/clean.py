"""Cleaning: raw sources -> one JSONL corpus of documents, with a count for every rule.

Why so explicit: a small GPT learns whatever it is fed, so every "Lyrics by X", "[Chorus]",
page number or Project Gutenberg licence paragraph left in the corpus is something it will
happily generate. But a cleaner that is too eager eats verse ("By the river of blood we stand",
"The words of the dead"). So cleaning is an ordered table of small named rules, each
`rule(text) -> (new_text, count)`, each tested on things it must remove AND on verse it must
leave alone, and each counted, so a notebook can show what was removed and how much.

The pipeline, one function (`clean`):
  inputs -> documents (atomlib.data.documents: a .txt file is one document, a JSONL record is one)
         -> the rules in RULES order (atomlib.data.text_rules, atomlib.data.lyric_rules)
         -> a document with no letter or digit left is dropped
         -> exact and near duplicates are dropped, the first seen kept (atomlib.data.dedup)
         -> data/interim/corpus.jsonl, written atomically, and clean_report.json beside it.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, namedtuple
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from atomlib import paths
from atomlib.data.dedup import Deduper
from atomlib.data.documents import expand_inputs, read_documents
from atomlib.data.lyric_rules import (album_headers, correction_requests, credits, metadata_lines, placeholders,
                                      section_repeat_markers, track_durations, track_headings)
from atomlib.data.text_rules import (gutenberg_header_footer, html_tags_entities, leading_indentation, numeric_noise,
                                     tidy, unicode_whitespace, urls_emails)

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
DEDUP_RULE = "duplicates"  # document-level: exact + near duplicates (see atomlib.data.dedup)
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
    return tidy(text), counts


# --- the command -----------------------------------------------------------------------------


@dataclass
class _Tally:
    """What one clean() run did: counts per rule and per outcome, documents per source, ids taken."""

    rules: Counter = field(default_factory=lambda: Counter({name: 0 for name in RULE_NAMES}))
    stats: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)
    ids: set = field(default_factory=set)

    def unique_id(self, doc_id: str) -> str:
        """`doc_id`, or on a clash doc_id-2, -3, ... (ids in the corpus are unique)."""
        unique, k = doc_id, 2
        while unique in self.ids:
            unique, k = f"{doc_id}-{k}", k + 1
        self.ids.add(unique)
        return unique


def _kept_documents(documents, tally: _Tally, dedup: Deduper, bar):
    """The cleaned documents worth keeping, counted: empty ones and duplicates are dropped."""
    for doc, nbytes in documents:
        bar.update(nbytes)
        tally.stats["documents_in"] += 1
        tally.stats["chars_in"] += len(doc["text"])
        text, counts = clean_text(doc["text"])
        tally.rules.update(counts)
        if not re.search(r"\w", text):
            tally.stats["dropped_empty"] += 1
            continue
        dup = dedup.check(text)
        if dup:
            tally.stats[f"dropped_duplicates_{dup}"] += 1
            tally.rules[DEDUP_RULE] += 1
            continue
        doc.update(id=tally.unique_id(doc["id"]), text=text)
        tally.stats["documents_out"] += 1
        tally.stats["chars_out"] += len(text)
        tally.sources[doc["source"]] += 1
        yield doc


def clean(inputs, out=None, progress=True, near_threshold: float = 0.8) -> dict:
    """Clean `inputs` (.txt files, folders of .txt, .jsonl with lyrics/text) into one JSONL corpus
    `out` (default data/interim/corpus.jsonl) and write clean_report.json beside it.

    Returns the report: {"rules": {rule: count}, "documents_in", "documents_out",
    "dropped_empty", "dropped_duplicates_exact", "dropped_duplicates_near", "sources", ...}.
    """
    t0 = time.perf_counter()
    files = expand_inputs(inputs)
    out = Path(out) if out is not None else paths.data_dir("interim") / "corpus.jsonl"
    tally = _Tally()
    total = sum(f.stat().st_size for f, _ in files)
    with paths.atomic_file(out, "w", encoding="utf-8") as f, \
            tqdm(total=total, unit="B", unit_scale=True, desc="clean", disable=not progress) as bar:
        for doc in _kept_documents(read_documents(files), tally, Deduper(near_threshold), bar):
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    report = {
        "rules": {name: tally.rules[name] for name in RULE_NAMES},
        **{k: tally.stats[k] for k in ("documents_in", "documents_out", "dropped_empty",
                                       "dropped_duplicates_exact", "dropped_duplicates_near")},
        "near_duplicate_threshold": near_threshold,
        "chars_in": tally.stats["chars_in"],
        "chars_out": tally.stats["chars_out"],
        "sources": dict(tally.sources),
        "inputs": [str(p) for p in (inputs if isinstance(inputs, (list, tuple)) else [inputs])],
        "output": str(out),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    paths.write_atomic(report_path(out), (json.dumps(report, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return report


def report_path(out: str | Path) -> Path:
    """clean_report.json beside the corpus file."""
    return Path(out).parent / "clean_report.json"
