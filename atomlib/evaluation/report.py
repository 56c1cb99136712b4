"""An evaluation's files and how it is read: eval.json, eval_samples.jsonl, tables.

`write_eval` writes a run's results; the rest read them back for people: the README's
markdown quality table (`render_quality_table`, with the command that made it) and the
pandas tables notebook 04 shows (runs and baselines metric by metric, per prompt kind, samples).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pandas as pd

from atomlib.errors import AtomError
from atomlib.evaluation.samples import BASELINES
from atomlib.evaluation.scoring import METRICS
from atomlib.generation.adaptive import KINDS
from atomlib.paths import write_atomic

COLUMN_LABELS = {"model": "model", "bigram": "bigram chars", "unigram": "unigram chars", "val_docs": "held-out text"}

# --- files -------------------------------------------------------------------------------------


def write_eval(run_dir: Path, result: dict, samples: Iterable[dict]) -> None:
    """DIR/eval.json and DIR/eval_samples.jsonl (each sample's filter record as its text and reason)."""
    write_atomic(run_dir / "eval.json", json.dumps(result, indent=1, ensure_ascii=False).encode("utf-8"))
    lines = []
    for s in samples:
        rec = {k: v for k, v in s.items() if k != "filter"}
        if s.get("filter") is not None:
            rec["filtered"] = s["filter"].text
            rec["filter_reason"] = s["filter"].reason
        lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
    write_atomic(run_dir / "eval_samples.jsonl", "".join(lines).encode("utf-8"))


def load_eval(run) -> dict:
    """A run's eval.json (run folder or the file itself)."""
    path = Path(run)
    path = path / "eval.json" if path.is_dir() else path
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AtomError(f"{path} does not exist; run `atom eval --run {path.parent}` first.") from None
    except (OSError, json.JSONDecodeError) as e:
        raise AtomError(f"{path} is unreadable ({type(e).__name__}); run `atom eval` again.") from None


def load_samples(run) -> list[dict]:
    path = Path(run) / "eval_samples.jsonl"
    if not path.is_file():
        raise AtomError(f"{path} does not exist; run `atom eval --run {run}` first.")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- the quality table ---------------------------------------------------------------------------


def quality_rows(result: dict, group: str = "overall") -> list[tuple[str, dict]]:
    """(metric label, {column: value}) rows: bpc first, then every generation metric."""
    cols = ["model", *[b for b in BASELINES if b in result.get("baselines", {})]]
    rows = [("bits per character (val)", {"model": result.get("bpc"),
                                          **{b: result["baselines"][b].get("bpc") for b in cols[1:]}})]
    for key, (label, _) in METRICS.items():
        if key not in result["generation"]:
            continue
        vals = {"model": result["generation"][key].get(group)}
        for b in cols[1:]:
            vals[b] = result["baselines"][b]["generation"].get(key, {}).get(group)
        rows.append((label, vals))
    return rows


def _fmt(key_label: str, v) -> str:
    if v is None:
        return "–"
    if "length" in key_label:
        return f"{v:.0f}"
    if key_label.startswith("bits"):
        return f"{v:.3f}"
    return f"{v:.2f}"


def render_quality_table(result_or_run, group: str = "overall") -> str:
    """The README's quality table (markdown) from an eval.json dict, file or run folder."""
    result = result_or_run if isinstance(result_or_run, dict) else load_eval(result_or_run)
    cols = ["model", *[b for b in BASELINES if b in result.get("baselines", {})]]
    st = result["settings"]
    out = [f"| metric ({group}) | " + " | ".join(COLUMN_LABELS[c] for c in cols) + " |",
           "| --- | " + " | ".join("---:" for _ in cols) + " |"]
    for label, vals in quality_rows(result, group):
        out.append(f"| {label} | " + " | ".join(_fmt(label, vals.get(c)) for c in cols) + " |")
    n = result["generation"].get("n_samples", {}).get(group)
    out.append("")
    out.append(f"Val loss {result['val_loss']:.4f} nats/token, perplexity {result['perplexity']:.2f}, "
               f"{result['chars_per_token']:.3f} chars/token, over {result['val_tokens_scored']:,} val tokens; "
               f"{n} samples ({st['num_samples']} per prompt), relevance by {st['relevance_backend']}, "
               f"run step {st.get('step')}.")
    out.append(f"Made by `{st['command']}` ({st['timestamp']}).")
    return "\n".join(out)


# --- tables for the notebook -------------------------------------------------------------------


def quality_frame(results: dict[str, dict], group: str = "overall") -> pd.DataFrame:
    """One column per run (and per baseline of the first run), one row per metric."""
    data, index = {}, None
    for i, (name, res) in enumerate(results.items()):
        rows = quality_rows(res, group)
        index = [label for label, _ in rows]
        data[name] = [vals.get("model") for _, vals in rows]
        if i == 0:
            for b in BASELINES:
                if b in res.get("baselines", {}):
                    data[COLUMN_LABELS[b]] = [vals.get(b) for _, vals in rows]
    lm = {name: [res["val_loss"], res["perplexity"]] for name, res in results.items()}
    frame = pd.DataFrame(data, index=index)
    extra = pd.DataFrame({k: v for k, v in lm.items()}, index=["val loss (nats/token)", "perplexity"])
    return pd.concat([extra, frame])


def kind_frame(result: dict, source: str = "model") -> pd.DataFrame:
    """Per-prompt-kind breakdown: one row per metric, one column per kind (and overall)."""
    gen = result["generation"] if source == "model" else result["baselines"][source]["generation"]
    keys = [k for k in METRICS if k in gen and len(gen[k]) > 1]
    cols = ["overall", *[k for k in KINDS if k in gen.get("n_samples", {})]]
    return pd.DataFrame({c: [gen[k].get(c) for k in keys] for c in cols}, index=[METRICS[k][0] for k in keys])


def samples_frame(run, source: str = "model") -> pd.DataFrame:
    """The samples of one source (model, bigram, unigram, val_docs, completion) with their metrics."""
    rows = []
    for s in load_samples(run):
        if s["source"] != source:
            continue
        m = {k: v for k, v in s.get("metrics", {}).items() if not isinstance(v, (list, dict))}
        rows.append({"kind": s.get("kind"), "prompt": s["prompt"], "output": s["output"], **m})
    return pd.DataFrame(rows)


EXAMPLE_COLUMNS = ("kind", "prompt", "output", "artifact_free", "repeated_lines", "rhyme_density", "theme_hit",
                   "relevance", "copy_chars")


def example_samples(run, per_kind: int = 1, chars: int = 400, columns=EXAMPLE_COLUMNS) -> pd.DataFrame:
    """The first `per_kind` model samples of each prompt kind, outputs cut to `chars`, with the
    per-sample metrics behind the quality table."""
    picked = samples_frame(run).groupby("kind", sort=False).head(per_kind)
    picked = picked[[c for c in columns if c in picked.columns]].reset_index(drop=True)
    return picked.assign(output=picked["output"].str.slice(0, chars))


def verse_table(rows, columns=("text", "output"), precision: int = 2):
    """rows (a DataFrame or a list of dicts) as a styled table in which the line breaks of the
    verse columns show and the verse reads left-aligned; numbers to `precision` decimals."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    wrap = [c for c in columns if c in frame.columns]
    style = frame.style.format(precision=precision, na_rep="–").format_index(precision=precision)
    return style.set_properties(subset=wrap, **{"white-space": "pre-wrap", "text-align": "left"})
