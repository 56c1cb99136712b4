"""Reading the cleaner's inputs as documents: .txt files, folders of them, and JSONL records.

A .txt file is ONE document (a Gutenberg work stays whole: splitting 17 differently laid-out
books into poems/cantos is not cheap to do reliably, and `prepare` cuts long texts into
paragraph-sized pieces anyway; the train/val split there is by document), with its title and
author from its Project Gutenberg header or the sources manifest. A JSONL record (e.g. the
scraper's songs.jsonl) is one document: its text from `lyrics` or `text`, the rest metadata.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from atomlib.data.sources import load_manifest
from atomlib.data.text_rules import gutenberg_meta
from atomlib.errors import AtomError

TEXT_FIELDS = ("lyrics", "text")


def _slug(s) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(s).lower()).strip("-") or "x"


def expand_inputs(inputs) -> list[tuple[Path, Path]]:
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


def read_documents(files):
    """(document, bytes read) for every input file, in order."""
    works = _manifest_index()
    for path, root in files:
        if path.suffix.lower() == ".jsonl":
            yield from _jsonl_documents(path)
        else:
            yield _txt_document(path, root, works), path.stat().st_size
