"""`atom bench` at a tiny size: it runs, the JSON holds every figure, the two models share
their weights. Correctness only: no timing is asserted (the machine is shared)."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from conftest import atom_cmd


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run(atom_cmd("bench", "--tiny", "--rounds", "1", "--json", out),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text()), proc.stdout


def test_json_holds_the_machine_and_every_figure(tiny_bench):
    r, _ = tiny_bench
    for key in ("device", "dtype", "dtype_auto", "generate_dtype_auto", "generate_precision_kl", "torch",
                "transformers", "cpu_bf16_units", "threads",
                "peak_flops", "shape", "same_weights", "train", "generate", "ratios", "targets", "notes"):
        assert key in r, key
    assert r["tiny"] is True and r["torch"] == torch.__version__
    assert r["dtype_auto"] in ("float32", "bfloat16", "float16")
    if r["device"] == "cpu":
        assert isinstance(r["cpu_bf16_units"], bool) and isinstance(r["cpu_bf16_fast"], bool)
        assert isinstance(r["cpu"]["flags"], list) and "bf16_flags" in r["cpu"]
        assert r["dtype_auto"] == ("bfloat16" if r["cpu_bf16_fast"] else "float32")
        assert r["case"] == ("bf16_units" if r["cpu_bf16_units"] else "no_bf16_units")
        assert r["cpu_bf16_fast"] or not r["cpu_bf16_units"]
    assert r["peak_flops"]["float32"] > 0 and r["peak_flops"]["bfloat16"] > 0


def test_training_rows(tiny_bench):
    r, _ = tiny_bench
    train = r["train"]
    assert {"atom_fp32", "hf_fp32", "atom_bf16", "hf_bf16", "atom_auto"} <= set(train)
    for key, row in train.items():
        assert row["tokens_per_s"] > 0 and row["best_tokens_per_s"] >= row["tokens_per_s"], key
        assert row["mfu"] is None or row["mfu"] > 0
        assert row["dtype"] in ("float32", "bfloat16", "float16")
    assert train["atom_auto"]["dtype"] == r["dtype_auto"]
    assert train["atom_auto"]["same_as"] in train


def test_generation_rows(tiny_bench):
    r, _ = tiny_bench
    gen, G = r["generate"], r["shape"]["gen_batch"]
    for key in ("atom_generate_1", "hf_generate_1", "atom_nocache_1", f"atom_generate_{G}", f"hf_generate_{G}"):
        assert gen[key]["tokens_per_s"] > 0, key
    assert gen[f"atom_generate_{G}"]["tokens_per_unit"] == G * r["shape"]["new_tokens"]
    assert gen["atom_nocache_1"]["kv_cache"] is False and gen["atom_generate_1"]["kv_cache"] is True
    assert gen["atom_generate_1"]["precision"] == gen["atom_nocache_1"]["precision"] == r["generate_dtype_auto"]
    assert gen["hf_generate_1"]["precision"] == "float32"
    assert r["generate_dtype_auto"] in ("float32", r["dtype_auto"])
    if r["generate_dtype_auto"] != "float32":  # ATOM in float32 too, so the precision's share is visible
        assert gen["atom_generate_1_fp32"]["precision"] == "float32" and "generate_fp32_1_vs_hf" in r["ratios"]
    for key in ("atom_kernels_1", f"atom_kernels_{G}"):  # the floors behind the ceilings
        assert gen[key]["kernels_only"] is True and gen[key]["tokens_per_s"] > 0, key
    assert gen[f"atom_kernels_{G}"]["tokens_per_unit"] == G * r["shape"]["new_tokens"]


def test_ratios_are_positive_and_divide_the_right_rows(tiny_bench):
    r, _ = tiny_bench
    ratios, train, gen = r["ratios"], r["train"], r["generate"]
    for key in ("train_vs_hf_fp32", "train_vs_hf_bf16", "generate_vs_hf", "generate_vs_nocache"):
        assert ratios[key] > 0, key
    assert ratios["train_vs_hf_fp32"] == pytest.approx(train["atom_auto"]["tokens_per_s"] / train["hf_fp32"]["tokens_per_s"])
    assert ratios["train_vs_hf_bf16"] == pytest.approx(train["atom_bf16"]["tokens_per_s"] / train["hf_bf16"]["tokens_per_s"])
    assert ratios["generate_vs_nocache"] == pytest.approx(gen["atom_generate_1"]["tokens_per_s"] / gen["atom_nocache_1"]["tokens_per_s"])
    assert ratios["generate_vs_hf"] <= ratios["generate_1_vs_hf"]
    G = r["shape"]["gen_batch"]
    assert ratios["generate_1_ceiling_vs_hf"] == pytest.approx(gen["atom_kernels_1"]["tokens_per_s"] / gen["hf_generate_1"]["tokens_per_s"])
    assert ratios[f"generate_{G}_ceiling_vs_hf"] == pytest.approx(
        gen[f"atom_kernels_{G}"]["tokens_per_s"] / gen[f"hf_generate_{G}"]["tokens_per_s"])
    assert ratios["generate_ceiling_vs_hf"] == min(ratios["generate_1_ceiling_vs_hf"], ratios[f"generate_{G}_ceiling_vs_hf"])
    for key, t in r["targets"].items():
        assert t["met"] == (t["value"] >= t["target"])


def test_same_weights_give_the_same_logits(tiny_bench):
    r, _ = tiny_bench
    assert r["same_weights"]["ok"] and r["same_weights"]["max_abs_logit_diff"] < 1e-4


def test_table_on_stdout(tiny_bench):
    _, out = tiny_bench
    for text in ("training", "generation", "ATOM float32", "HF GPT-2 float32 eager", "train_vs_hf_fp32",
                 "generate_vs_nocache"):
        assert text in out


def test_same_weights_check_catches_different_weights():
    from atomlib.evaluation.bench_models import BenchShape, build_models, same_weights_check

    shape = BenchShape(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=40, new_tokens=8, prompt_tokens=4)
    atom, hf = build_models(shape)
    assert same_weights_check(atom, hf, shape, torch.device("cpu"))["ok"]
    with torch.no_grad():
        atom.transformer.ln_f.weight.mul_(1.5)
    assert not same_weights_check(atom, hf, shape, torch.device("cpu"))["ok"]
    assert shape.positions == 32  # block covers prompt + new tokens here


def test_vocabulary_falls_back_to_96_and_says_so():
    from atomlib.evaluation.bench_models import DEFAULT_VOCAB, _vocabulary

    chars, note = _vocabulary("no-such-dataset-here")
    assert len(chars) == DEFAULT_VOCAB and "\n" in chars and "96" in note


def test_bad_rounds_is_one_clear_error():
    proc = subprocess.run(atom_cmd("bench", "--tiny", "--rounds", "0"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "atom bench: error: --rounds 0 must be at least 1."


def test_profile_prints_the_top_ops_of_each_contestant():
    proc = subprocess.run(atom_cmd("bench", "--tiny", "--profile"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    headers = [line for line in proc.stdout.splitlines() if line.startswith("== ")]
    assert len(headers) == 6, headers
    assert any("HF GPT-2 generate, 1 sequence" in h for h in headers)
    assert "Self CPU time total" in proc.stdout and "aten::" in proc.stdout


def test_precision_kl_is_small_for_bf16_and_absent_for_float32():
    from atomlib.evaluation.bench_models import BenchShape, build_models, next_token_kl

    shape = BenchShape(n_layer=2, n_head=2, n_embd=64, block_size=32, vocab_size=40, new_tokens=24, prompt_tokens=8)
    atom, _ = build_models(shape)
    cpu = torch.device("cpu")
    assert next_token_kl(atom, shape, cpu, torch.float32) is None
    kl = next_token_kl(atom, shape, cpu, torch.bfloat16)
    assert 0 <= kl < 1e-3  # (test_kernels.py shows the same measure catching a decoding mistake)


def test_a_run_may_report_its_own_seconds():
    from atomlib.evaluation.bench_timing import Contestant, time_rounds

    calls = []
    c = Contestant("x", "x", run=lambda: calls.append(1) or 0.25, tokens=10, rounds=3)
    time_rounds([c], torch.device("cpu"), None, "test")
    assert c.seconds == [0.25, 0.25, 0.25] and len(calls) == 4  # one warm-up, three timed
    assert c.rates() == [40.0, 40.0, 40.0]


def test_kernel_floor_runs_exactly_the_models_kernels_of_every_step(monkeypatch):
    """The floor calls each of the model's linear layers once a step and attention once a layer,
    over the cache lengths a generation visits (prompt + 1 ... prompt + new tokens), on every
    thread count it tries, and gives the thread count back."""
    import torch.nn.functional as F

    from atomlib.model import kernels
    from atomlib.evaluation.bench_rows import kernel_floor
    from atomlib.evaluation.bench_models import BenchShape, build_models

    shape = BenchShape(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=40, new_tokens=5, prompt_tokens=3)
    atom, _ = build_models(shape)
    atom.eval()
    linears = [m for m in atom.modules() if isinstance(m, kernels.Linear)]
    assert len(linears) == 4 * shape.n_layer + 1  # qkv, attention out, MLP in and out; the head
    counts = {id(lin): 0 for lin in linears}
    lengths = []
    real_sdpa = F.scaled_dot_product_attention

    def sdpa(q, k, v, *a, **kw):
        lengths.append(k.size(2))
        return real_sdpa(q, k, v, *a, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", sdpa)
    real_forward = kernels.Linear.forward

    def counted(self, x):
        counts[id(self)] += 1
        return real_forward(self, x)

    monkeypatch.setattr(kernels.Linear, "forward", counted)
    before = torch.get_num_threads()
    seconds = kernel_floor(atom, shape, torch.device("cpu"), 2, torch.float32)()
    tries = len({1, before})
    assert isinstance(seconds, float) and seconds > 0
    assert torch.get_num_threads() == before
    assert all(n == tries * shape.new_tokens for n in counts.values()), counts
    want = [end for end in range(4, 9) for _ in range(tries) for _ in range(shape.n_layer)]
    assert lengths == want


def test_ratios_divide_medians_and_generation_takes_the_lower_of_one_and_batch():
    from atomlib.evaluation.bench_report import ratios, targets

    def rows(**rates):
        return {k: {"tokens_per_s": v, "best_tokens_per_s": 2 * v} for k, v in rates.items()}

    train = rows(atom_auto=300.0, hf_fp32=100.0, atom_bf16=50.0, hf_bf16=25.0, atom_fp32=200.0)
    gen = rows(atom_generate_1=400.0, hf_generate_1=100.0, atom_generate_2=300.0, hf_generate_2=150.0,
               atom_nocache_1=20.0, atom_kernels_1=800.0, atom_kernels_2=600.0)
    r = ratios(train, gen, 2)
    assert (r["train_vs_hf_fp32"], r["train_vs_hf_bf16"], r["train_fp32_vs_hf_fp32"]) == (3.0, 2.0, 2.0)
    assert (r["generate_1_vs_hf"], r["generate_2_vs_hf"], r["generate_vs_hf"]) == (4.0, 2.0, 2.0)
    assert r["generate_vs_nocache"] == 20.0 and r["generate_ceiling_vs_hf"] == 4.0
    assert "generate_fp32_1_vs_hf" not in r  # only when ATOM also ran in float32
    assert ratios(train, gen, 2, "best_tokens_per_s") == r  # both sides doubled
    t = targets("no_bf16_units", r)
    assert t["train_vs_hf_fp32"] == {"target": 1.3, "value": 3.0, "met": True}
    assert t["generate_vs_hf"]["met"] is False and "train_vs_hf_bf16" not in t


def test_train_rows_add_mfu_and_name_the_row_auto_picks():
    from atomlib.evaluation.bench import Plan, train_rows
    from atomlib.evaluation.bench_timing import Contestant

    rows = [Contestant(k, k.upper(), run=None, tokens=1000, rounds=2, settings={"dtype": d}, seconds=[2.0, 1.0])
            for k, d in (("atom_fp32", "float32"), ("hf_fp32", "float32"), ("atom_bf16", "bfloat16"))]
    out = train_rows(rows, {"float32": 1e6, "bfloat16": 0.0}, 100.0, 2, torch.float32, False)
    assert out["atom_fp32"]["tokens_per_s"] == 750.0 and out["atom_fp32"]["mfu"] == pytest.approx(100 * 750 / 1e6)
    assert out["atom_fp32"]["step_ms"] == 750.0 and out["atom_bf16"]["mfu"] is None  # no peak, no MFU
    assert out["atom_auto"]["same_as"] == "atom_fp32" and out["atom_auto"]["label"] == "ATOM auto (= ATOM_FP32)"
    assert Plan.of(tiny=True, rounds=None) == Plan(2, 2, (None, None), 1)
    assert Plan.of(tiny=False, rounds=4) == Plan(4, 4, (None, None), 2)
    assert Plan.of(tiny=False, rounds=None).budgets[0] is not None  # a default run has a time budget
