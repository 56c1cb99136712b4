"""Evaluation: numbers that can be rerun, in place of claims.

`atom eval --run DIR` (or `evaluate_run(DIR)`) measures a trained run and writes
`DIR/eval.json` and `DIR/eval_samples.jsonl`, in these steps (each in its own module):

    loss      the val split's mean cross-entropy over block_size windows, perplexity, and bits per
              character (nats per token / ln 2 / characters per token: char and BPE runs compare)
    samples   the prompt set answered by the one answer pipeline (each prompt with its kind's
              preset and a fixed seed), completion mode on unfinished lines, and the baselines:
              unigram and bigram character models fitted on the train split and held-out val
              documents, on the same prompts, lengths and seeds
    scoring   every raw output scored by the same functions (evaluation.metrics, copying,
              relevance), then grouped overall and per prompt kind
    report    eval.json, eval_samples.jsonl, and the tables that read them back

Baselines show where the model stands between noise and human text: held-out documents were not
written for the prompt, so their relevance and theme scores are what such text gets by chance.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from atomlib.errors import AtomError
from atomlib.evaluation.char_ngrams import CharNgramModel
from atomlib.evaluation.copying import CopyIndex
from atomlib.evaluation.loss import measure_lm, run_meta, split_documents, split_text
from atomlib.evaluation.metrics import ThemeLexicon
from atomlib.evaluation.report import write_eval
from atomlib.evaluation.samples import (BASELINES, baseline_samples, completion_samples, default_prompts_path,
                                        first_per_kind, generate_samples, load_prompts)
from atomlib.evaluation.scoring import COPY_SPAN, Relevance, by_metric, completion_summary, score_samples
from atomlib.model.checkpoint import load_run
from atomlib.paths import project_root, resolve_run


@dataclass
class EvalOptions:
    """How a run is evaluated; every field is recorded in eval.json's "settings"."""

    prompts: str | Path | None = None  # a JSONL prompt file; None: the shipped set
    num_samples: int = 2  # samples per prompt
    seed: int = 1234
    val_batches: int | None = None  # None: the whole val split
    device: str = "auto"
    relevance: str = "auto"  # auto (MiniLM when installed), minilm or tfidf
    max_new_tokens: int | None = None  # None: each prompt kind's preset decides
    completion_n: int = 8  # candidates per completion line
    prompts_per_kind: int | None = None  # a quick look: the first N prompts of each kind
    baselines: bool = True
    batch_size: int = 32  # val windows per forward
    precision: str = "auto"
    progress: bool = True

    def __post_init__(self):
        if self.num_samples < 1:
            raise AtomError(f"--num-samples {self.num_samples} must be at least 1.")
        if self.val_batches is not None and self.val_batches < 1:
            raise AtomError(f"--val-batches {self.val_batches} must be at least 1 "
                            "(leave it out for the full val split).")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise AtomError(f"--max-new-tokens {self.max_new_tokens} must be at least 1.")
        if self.prompts_per_kind is not None and self.prompts_per_kind < 1:
            raise AtomError(f"--prompts-per-kind {self.prompts_per_kind} must be at least 1.")


@dataclass
class Clock:
    """Wall-clock seconds of each step of an evaluation, for eval.json's settings."""

    start: float = field(default_factory=time.time)
    laps: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def lap(self, name: str):
        t0 = time.time()
        yield
        self.laps[name] = round(time.time() - t0, 2)

    def seconds(self) -> dict[str, float]:
        return {**self.laps, "total": round(time.time() - self.start, 2)}


def evaluate_run(run=None, *, write: bool = True, **options) -> dict:
    """Measure a run (default: the newest) and write DIR/eval.json and DIR/eval_samples.jsonl.

    options are EvalOptions' fields. Returns the eval.json dict; every number is reproducible
    from its "settings"."""
    opts = EvalOptions(**options)
    clock = Clock()
    run_dir = resolve_run(run)
    prompts, lines = first_per_kind(*load_prompts(opts.prompts), opts.prompts_per_kind)  # fails before the model loads
    model, tok, state = load_run(run_dir, device=opts.device)
    data_dir, meta = run_meta(state)
    with clock.lap("val_loss"):
        result, val_text, dtype = measure_lm(model, tok, data_dir, meta, opts.batch_size, opts.val_batches,
                                             opts.precision, opts.progress)
    with clock.lap("generate"):
        samples = generate_samples(model, tok, prompts, opts.num_samples, opts.seed, opts.max_new_tokens, opts.progress)
    with clock.lap("completion"):
        comp = completion_samples(model, tok, lines, opts.seed, n=opts.completion_n,
                                  max_new_tokens=opts.max_new_tokens, progress=opts.progress) if lines else []
    with clock.lap("baselines"):
        train_text = split_text(data_dir, "train", tok)
        val_docs = split_documents(val_text, meta.get("doc_separator"))
        rows, bpc = _with_baselines(samples, train_text, val_text, val_docs, opts)
    relevance = _score(rows, train_text, val_docs, opts.relevance, clock)
    result["generation"] = {**by_metric(samples), **completion_summary(comp)}
    result["baselines"] = {name: {"bpc": bpc[name], "generation": by_metric(rows[name])}
                           for name in BASELINES if name in rows}
    result["settings"] = {
        "run": str(run_dir), "step": state.get("step"),
        "checkpoint": "best" if (run_dir / "best" / "state.json").is_file() else "latest",
        "dataset": str(data_dir), "tokenizer": meta.get("tokenizer"),
        **_settings(opts, len(prompts), len(lines)), "val_dtype": dtype, "relevance_backend": relevance.name,
        "copy_span_chars": COPY_SPAN, "device": str(next(model.parameters()).device),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": eval_command_line(run_dir, opts, "minilm" if relevance.name.startswith("minilm") else "tfidf"),
        "seconds": clock.seconds(),
    }
    if write:
        write_eval(run_dir, result, [s for ss in rows.values() for s in ss] + comp)
    return result


def _with_baselines(samples: list[dict], train_text: str, val_text: str, val_docs: list[str],
                    opts: EvalOptions) -> tuple[dict[str, list[dict]], dict]:
    """The rows of every source ({"model": samples, "bigram": ...}) and each baseline's val bpc."""
    if not opts.baselines:
        return {"model": samples}, {}
    uni, bi = CharNgramModel(train_text, 1), CharNgramModel(train_text, 2)
    rows = {"model": samples, **baseline_samples(samples, uni, bi, val_docs, opts.seed)}
    return rows, {"unigram": uni.bpc(val_text), "bigram": bi.bpc(val_text), "val_docs": None}


def _score(rows: dict[str, list[dict]], train_text: str, val_docs: list[str], backend: str, clock: Clock) -> Relevance:
    """Score every source's samples in place; the relevance backend used."""
    with clock.lap("copy_index"):
        longest = max((len(s["output"]) for ss in rows.values() for s in ss), default=1)
        copy_index = CopyIndex(train_text, depth=max(64, min(4096, longest)))
    with clock.lap("score"):
        relevance = Relevance(backend, fit_docs=val_docs[:2000])
        lexicon = ThemeLexicon()
        for ss in rows.values():
            score_samples(ss, lexicon, copy_index, relevance)
    return relevance


def _settings(opts: EvalOptions, n_prompts: int, n_lines: int) -> dict:
    """The options as eval.json records them."""
    return {"seed": opts.seed, "num_samples": opts.num_samples,
            "prompts": str(opts.prompts) if opts.prompts is not None else "default",
            "prompts_file": str(opts.prompts if opts.prompts is not None else default_prompts_path()),
            "n_prompts": n_prompts, "prompts_per_kind": opts.prompts_per_kind, "completion_lines": n_lines,
            "completion_candidates": opts.completion_n, "max_new_tokens": opts.max_new_tokens,
            "val_batches": opts.val_batches, "batch_size": opts.batch_size}


def eval_command_line(run_dir: Path, opts: EvalOptions, relevance: str) -> str:
    """The `atom eval` command that reproduces an evaluation (relevance: the backend actually used)."""
    parts = ["atom", "eval", "--run", _show_path(run_dir)]
    if opts.prompts is not None:
        parts += ["--prompts", _show_path(Path(opts.prompts))]
    parts += ["--num-samples", str(opts.num_samples), "--seed", str(opts.seed)]
    if opts.val_batches is not None:
        parts += ["--val-batches", str(opts.val_batches)]
    if opts.max_new_tokens is not None:
        parts += ["--max-new-tokens", str(opts.max_new_tokens)]
    if opts.prompts_per_kind is not None:
        parts += ["--prompts-per-kind", str(opts.prompts_per_kind)]
    parts += ["--relevance", relevance]
    if opts.completion_n != 8:
        parts += [f"# completion_n={opts.completion_n} (Python API)"]
    return " ".join(parts)


def _show_path(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(project_root()))
    except ValueError:
        return str(p)


# --- the command line and the notebook ------------------------------------------------------------


def evaluate_runs(run_dirs, **options) -> dict[str, dict]:
    """evaluate_run on each run folder, by folder name, printing the command that reproduces each."""
    results = {}
    for run in run_dirs:
        results[Path(run).name] = evaluate_run(run, **options)
        print(Path(run).name, "->", results[Path(run).name]["settings"]["command"])
    return results
