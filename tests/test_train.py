"""The trainer on real code paths with tiny models: schedule, accumulation across ranks, DDP
parity (2 gloo processes), kill -9 and resume, atomic checkpoints, unreadable run folders,
and fine-tuning from a GPT-2 folder."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from atomlib.model import checkpoint as ckpt
from atomlib.cli import main as cli_main
from atomlib.config import ConfigError, load_config
from atomlib.errors import AtomError
from atomlib.training.batches import rank_offsets
from atomlib.training.dist import Dist, local_accumulation
from atomlib.training.launch import launch
from atomlib.training.optim import get_lr
from atomlib.training.runs import format_summary, read_metrics, run_folder_lock, summary
from atomlib.training.train import due, evaluate, prepare, run, train_step
from conftest import atom_cmd

TINY = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 4, "dropout": 0.0,
        "eval_iters": 2, "log_interval": 5, "warmup_iters": 2, "dtype": "float32", "device": "cpu"}


def tiny_args(dataset, **extra) -> list[str]:
    return [f"{k}={v}" for k, v in {**TINY, "dataset": dataset, **extra}.items()]


def tiny_cfg(dataset, **extra):
    return load_config("test", tiny_args(dataset, **extra))


@pytest.fixture(autouse=True)
def _small_footprint(monkeypatch):
    # MFU needs the machine's peak FLOP/s; measuring it costs half a second per run
    monkeypatch.setenv("ATOM_PEAK_FLOPS", "1e11")
    # tiny models gain nothing from threads, and on busy shared cores they spin-wait for each other
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def subprocess_env(**extra):
    # one thread: the same arithmetic in every process, and no fight over 2 shared cores
    return dict(os.environ, OMP_NUM_THREADS="1", ATOM_PEAK_FLOPS="1e11", **extra)


# --- schedule and accumulation -------------------------------------------------------------


def test_lr_warmup_then_cosine_to_min_lr():
    cfg = load_config("test", ["max_iters=100", "warmup_iters=10", "learning_rate=1e-3", "min_lr=1e-4"])
    lrs = [get_lr(s, cfg) for s in range(120)]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))  # warmup rises to the peak
    assert lrs[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:101]))  # cosine falls
    assert lrs[55] == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))  # halfway: midpoint
    assert lrs[100] == lrs[119] == pytest.approx(1e-4)  # then flat at min_lr
    short = load_config("test", ["max_iters=100", "warmup_iters=0", "lr_decay_iters=50", "min_lr=1e-4"])
    assert get_lr(0, short) == pytest.approx(short.learning_rate) and get_lr(60, short) == pytest.approx(1e-4)


def test_accumulation_is_divided_among_ranks():
    assert local_accumulation(8, 1) == 8
    assert local_accumulation(8, 2) == 4
    assert local_accumulation(8, 8) == 1
    with pytest.raises(ConfigError, match=r"'gradient_accumulation_steps' = 3 must be divisible by .* \(2\)"):
        local_accumulation(3, 2)


def test_each_rank_draws_its_slice_of_one_global_batch():
    cfg = load_config("test", ["gradient_accumulation_steps=4", "batch_size=3", "block_size=8"])
    whole = rank_offsets(torch.Generator().manual_seed(5), 1000, cfg, Dist())
    slices = [rank_offsets(torch.Generator().manual_seed(5), 1000, cfg, Dist(rank=r, world_size=2)) for r in (0, 1)]
    assert whole.shape == (4, 3) and slices[0].shape == (2, 3)
    assert torch.equal(torch.cat(slices), whole)  # the same global batch, whatever the number of ranks


def test_steps_are_logged_and_evaluated_on_their_intervals_and_at_the_end():
    cfg = load_config("test", ["max_iters=12", "log_interval=5", "eval_interval=6", "warmup_iters=1"])
    assert [s for s in range(1, 13) if due(s, cfg)[0]] == [5, 6, 10, 12]
    assert [s for s in range(1, 13) if due(s, cfg)[1]] == [6, 12]


def test_a_train_step_advances_the_state_and_lowers_the_loss(tiny_dataset, tmp_path):
    cfg = tiny_cfg(tiny_dataset, max_iters=20, learning_rate=3e-3, gradient_accumulation_steps=2)
    setup, state, saved = prepare(cfg, tmp_path / "run", False, False, Dist(), torch.device("cpu"), 2)
    assert saved is None and state.step == 0 and not (tmp_path / "run").exists()  # nothing written yet
    before = evaluate(state, setup)["train"]
    for _ in range(20):
        lr, loss, grad_norm = train_step(state, setup)
        assert lr == get_lr(state.step - 1, cfg) and math.isfinite(loss.item()) and grad_norm is not None
    assert state.step == 20 and state.tokens == 20 * setup.tokens_per_step == 20 * 2 * 4 * 32
    assert evaluate(state, setup)["train"] < before


def test_a_summary_reads_as_a_table_row():
    s = {"run": "r", "params": 1_234_567, "steps": 12, "processes": 2, "device": "cpu float32",
         "tokens_per_s": 12345.6, "mfu": 0.0123, "best_val_loss": 2.345678, "final_train_loss": None, "elapsed_s": 61.7}
    assert format_summary(s) == {"run": "r", "parameters": "1.23M", "steps": 12, "processes": 2,
                                 "device": "cpu float32", "tokens/s": "12,346", "MFU": "1.2%",
                                 "best val loss": 2.3457, "final train loss": "n/a", "wall-clock (s)": 62}


def test_launch_refuses_indivisible_accumulation_before_spawning(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="gradient_accumulation_steps"):
        launch("test", tiny_args(tiny_dataset, gradient_accumulation_steps=1), out_dir=out, nproc=2)
    assert not out.exists()


# --- a run, its files, DDP parity -------------------------------------------------------------


def test_run_writes_checkpoints_and_metrics(tiny_dataset, tmp_path):
    out = run(tiny_cfg(tiny_dataset, max_iters=12, eval_interval=6), tmp_path / "run", progress=False)
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "optimizer.safetensors", "state.json",
                                               "metrics.jsonl", "best"}
    state = json.loads((out / "state.json").read_text())
    assert state["step"] == 12 and state["config"]["max_iters"] == 12
    assert state["tokenizer"]["tokenizer"] == "char" and state["dataset"] == str(tiny_dataset)
    assert {"rng", "data", "elapsed_s", "model_config", "best_val_loss", "dataset_meta"} <= set(state)
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [0, 5, 6, 10, 12]
    for r in rows[1:]:
        assert {"step", "lr", "loss", "tokens_per_s", "mfu", "elapsed_s"} <= set(r)
        assert r["tokens_per_s"] > 0 and math.isfinite(r["loss"])
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == [0, 6, 12] and all("train_loss" in r for r in evals)
    assert state["best_val_loss"] == min(r["val_loss"] for r in evals[1:])
    assert all(a["elapsed_s"] <= b["elapsed_s"] for a, b in zip(rows, rows[1:]))
    model, tok, best = ckpt.load_run(out, device="cpu")  # best/ is loadable on its own
    assert best["val_loss"] == state["best_val_loss"] and tok.vocab_size == model.config.vocab_size
    assert summary(out)["steps"] == 12


def test_state_records_every_switch_and_the_optimizer(tiny_dataset, tmp_path):
    out = run(tiny_cfg(tiny_dataset, max_iters=4, eval_interval=4, **MODERN_MUON), tmp_path / "run", progress=False)
    state = json.loads((out / "state.json").read_text())
    mc = state["model_config"]
    assert (mc["pos_emb"], mc["norm"], mc["qk_norm"], mc["mlp"], mc["tie_embeddings"]) == \
        ("rope", "rmsnorm", True, "relu2", False)
    assert state["config"]["optimizer"] == "muon" and state["config"]["matrix_lr"] == 0.03
    kinds = [g["kind"] for g in state["optimizer"]["param_groups"]]
    assert kinds == ["matrix", "embedding", "head", "scalar"]
    model, _, _ = ckpt.load_run(out, which="latest", device="cpu")
    assert model.lm_head.weight is not model.transformer.wte.weight  # the untied head came back as itself
    # a resumed run may not change a switch
    with pytest.raises(AtomError, match=r"trained with pos_emb='rope' but the config says 'learned'"):
        run(tiny_cfg(tiny_dataset, max_iters=8, eval_interval=4, **{**MODERN_MUON, "pos_emb": "learned"}), out,
            progress=False)


def test_muon_groups_step_at_their_own_rates(tiny_dataset):
    from atomlib.model.gpt import GPT, GPTConfig
    from atomlib.training.optim import MuonAdamW, build_optimizer, set_lr

    cfg = tiny_cfg(tiny_dataset, **MODERN_MUON, embedding_lr=0.01, head_lr=0.002, learning_rate=0.004)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16, pos_emb="rope",
                          tie_embeddings=False, norm="rmsnorm"))
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    assert isinstance(opt, MuonAdamW) and isinstance(opt.optimizers[0], torch.optim.Muon)
    set_lr(opt, cfg, 0.5)
    rates = {g["kind"]: g["lr"] for g in opt.param_groups}
    assert rates == {"matrix": 0.015, "embedding": 0.005, "head": 0.001, "scalar": 0.002}
    muon_params = {id(p) for p in opt.optimizers[0].param_groups[0]["params"]}
    assert muon_params == {id(p) for p in model.param_kinds()["matrix"]}
    # the state dict is torch's format over both, and loads back
    x = torch.randint(0, 20, (2, 16))
    model(x, x)[1].backward()
    opt.step()
    sd = opt.state_dict()
    assert sorted(sd["state"]) == list(range(len(list(model.parameters()))))
    assert "momentum_buffer" in sd["state"][0] and "exp_avg" in sd["state"][len(muon_params)]
    fresh = build_optimizer(model, cfg, torch.device("cpu"))
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.state_dict()["state"][0]["momentum_buffer"], sd["state"][0]["momentum_buffer"])


def test_batched_muon_makes_torchs_muon_update():
    """Batching Newton-Schulz over same-shaped matrices changes the speed, not the update."""
    from atomlib.training.optim import Muon

    torch.manual_seed(0)
    shapes = [(48, 16), (16, 16), (16, 48), (48, 16)]
    start = [torch.randn(s) * 0.1 for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(3)]
    finals = []
    for cls in (torch.optim.Muon, Muon):
        ps = [torch.nn.Parameter(w.clone()) for w in start]
        opt = cls(ps, lr=0.02, weight_decay=0.01)
        for g in grads:
            for p, gg in zip(ps, g):
                p.grad = gg.clone()
            opt.step()
        finals.append(ps)
        assert all("momentum_buffer" in opt.state[p] for p in ps)
    for a, b, w in zip(*finals, start):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        assert (a - w).norm() > 0.01


def test_muon_with_float32_newton_schulz_makes_the_same_update():
    """Where bf16 would be emulated, Muon's orthogonalisation runs in float32: the update is the
    same up to bf16's rounding."""
    from atomlib.training.optim import Muon

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(48, 16))
    grads = [torch.randn(48, 16) for _ in range(3)]
    finals = []
    for float32_ns in (False, True):
        p = torch.nn.Parameter(w.detach().clone())
        opt = Muon([p], lr=0.02, float32_ns=float32_ns, weight_decay=0.0)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        finals.append(p.detach())
    step = (w - finals[0]).norm()
    assert (finals[0] - finals[1]).norm() < 0.05 * step  # same direction and size, bf16 rounding apart
    assert step > 0.01


def test_resume_with_a_different_shape_is_refused(tiny_dataset, tmp_path):
    out = run(tiny_cfg(tiny_dataset, max_iters=2, eval_interval=2), tmp_path / "run", progress=False)
    with pytest.raises(AtomError, match=r"trained with n_embd=32 but the config says 64"):
        run(tiny_cfg(tiny_dataset, max_iters=4, eval_interval=2, n_embd=64), out, progress=False)


MODERN_MUON = {"optimizer": "muon", "pos_emb": "rope", "norm": "rmsnorm", "qk_norm": "true", "mlp": "relu2",
               "tie_embeddings": "false", "matrix_lr": 0.03}


@pytest.mark.parametrize("extra", [{}, MODERN_MUON], ids=["adamw", "muon"])
def test_ddp_two_processes_match_one(tiny_dataset, tmp_path, extra):
    """Same seed and global batch (accumulation 2 = 1 micro-step on each of 2 ranks): same curve,
    with AdamW and with Muon (whose update orthogonalises the all-reduced gradient)."""
    args = tiny_args(tiny_dataset, max_iters=10, eval_interval=5, gradient_accumulation_steps=2, **extra)
    one = run(load_config("test", args), tmp_path / "one", progress=False)
    home = tmp_path / "home"  # the workers' project root: anything written outside --out lands here
    home.mkdir()
    (home / "configs").symlink_to(Path(__file__).resolve().parents[1] / "configs")
    sets = [a for kv in args for a in ("--set", kv)]
    r = subprocess.run(atom_cmd("train", "--config", "test", *sets, "--nproc", 2, "--out", tmp_path / "two"),
                       capture_output=True, text=True, cwd=home, env=subprocess_env(ATOM_HOME=str(home)), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    a, b = read_metrics(one), read_metrics(tmp_path / "two")
    assert [x["step"] for x in a] == [x["step"] for x in b] == [0, 5, 10]  # one writer: no duplicate rows
    for x, y in zip(a, b):
        for key in ("loss", "train_loss", "val_loss"):
            assert y[key] == pytest.approx(x[key], rel=1e-4, abs=1e-5), (x["step"], key)
    state = json.loads((tmp_path / "two" / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    # only rank 0 wrote: nothing but the run folder appeared, and its files are the single writer's
    assert sorted(p.name for p in home.iterdir()) == ["configs"]
    assert {p.name for p in (tmp_path / "two").iterdir()} == {"model.safetensors", "optimizer.safetensors",
                                                             "state.json", "metrics.jsonl", "best", ".prev", ".lock"}
    assert r.stdout.count("step 10: train loss") == 1


# --- kill -9 and resume ------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{}, MODERN_MUON], ids=["adamw", "muon"])
def test_kill_and_resume_matches_an_uninterrupted_run(tiny_dataset, tmp_path, extra):
    # dropout: its RNG is resumed too; muon: its momentum buffers and AdamW's moments both
    args = tiny_args(tiny_dataset, max_iters=150, eval_interval=10, dropout=0.1, **extra)
    full = run(load_config("test", args), tmp_path / "full", progress=False)  # 1 thread here, as in the subprocesses
    killed = tmp_path / "killed"
    sets = [a for kv in args for a in ("--set", kv)]

    proc = subprocess.Popen(atom_cmd("train", "--config", "test", *sets, "--out", killed),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env())
    deadline = time.time() + 120
    while time.time() < deadline:  # kill as soon as a checkpoint past step 30 exists
        try:
            if json.loads((killed / "state.json").read_text())["step"] >= 30:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # it was still training
    at_kill = json.loads((killed / "state.json").read_text())["step"]
    assert 30 <= at_kill < 150

    r = subprocess.run(atom_cmd("train", "--resume", killed), capture_output=True, text=True,
                       env=subprocess_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"resuming from step {at_kill}" in r.stdout
    a, b = read_metrics(full), read_metrics(killed)
    assert [x["step"] for x in b] == [x["step"] for x in a]  # no gap, no duplicate
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], abs=1e-4), (x["step"], at_kill)
    assert b[-1]["val_loss"] == pytest.approx(a[-1]["val_loss"], abs=1e-4)
    assert b[-1]["train_loss"] == pytest.approx(a[-1]["train_loss"], abs=1e-4)
    assert all(p["elapsed_s"] <= q["elapsed_s"] for p, q in zip(b, b[1:]))  # wall clock continues


# --- checkpoints: atomic, and unreadable folders -------------------------------------------


def _state(step):
    from atomlib.model.gpt import GPTConfig

    mc = dataclasses.asdict(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=1, n_embd=8))
    return {"step": step, "config": {}, "model_config": mc, "tokenizer": {}, "best_val_loss": None}


def test_crash_between_renames_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from atomlib.model.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=1, n_embd=8))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))[1].backward()
    opt.step()
    folder = tmp_path / "run"
    ckpt.save_checkpoint(folder, model, _state(1), opt)
    saved = {k: v.clone() for k, v in ckpt.model_tensors(model).items()}

    real_replace = os.replace

    def crash_after_model(src, dst):  # the process dies right after the first file is renamed into place
        real_replace(src, dst)
        if Path(dst) == folder / "model.safetensors":
            raise KeyboardInterrupt("killed")

    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for attempt in (2, 3):  # twice in a row: the second crash must not spoil .prev either
        monkeypatch.setattr(os, "replace", crash_after_model)
        with pytest.raises(KeyboardInterrupt):
            ckpt.save_checkpoint(folder, model, _state(attempt), opt)
        monkeypatch.setattr(os, "replace", real_replace)
        state, tensors, opt_tensors = ckpt.load_checkpoint(folder, need_optimizer=True)
        assert state["step"] == 1 and opt_tensors
        assert all(torch.equal(tensors[k], saved[k]) for k in saved)
    ckpt.save_checkpoint(folder, model, _state(4), opt)  # a clean save afterwards wins
    assert ckpt.load_checkpoint(folder)[0]["step"] == 4


def _cli_error(capsys, *argv) -> str:
    assert cli_main(["train", *map(str, argv)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("atom train: error: "), err
    return err[0]


def test_unreadable_run_folders_fail_in_one_sentence(tiny_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert str(empty / "state.json") in _cli_error(capsys, "--resume", empty)
    assert "does not exist" in _cli_error(capsys, "--resume", tmp_path / "nowhere")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_run, corrupt)
    (corrupt / "state.json").write_text('{"step": 0, "conf')
    line = _cli_error(capsys, "--resume", corrupt)
    assert str(corrupt / "state.json") in line and "corrupt" in line
    assert {p.name for p in tmp_path.iterdir()} == {"empty", "corrupt"}  # nothing created


def test_truncated_checkpoint_through_the_cli(tiny_run, tmp_path):
    run_dir = tmp_path / "truncated"
    shutil.copytree(tiny_run, run_dir)
    data = (run_dir / "model.safetensors").read_bytes()
    (run_dir / "model.safetensors").write_bytes(data[: len(data) // 2])
    r = subprocess.run(atom_cmd("train", "--resume", run_dir), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(run_dir / "model.safetensors") in lines[0] and "Traceback" not in r.stderr


# --- init_from a GPT-2 folder ---------------------------------------------------------------


def test_init_from_a_gpt2_folder_trains_on_bpe(tiny_corpus, tiny_dataset, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from atomlib.data.prepare import prepare

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=50257))
    hf.save_pretrained(tmp_path / "gpt2-small-random")
    bpe = prepare(tiny_corpus, tokenizer="gpt2", out_dir=tmp_path / "bpe", val_fraction=0.2, seed=1, progress=False)
    cfg = load_config("finetune", tiny_args(bpe, init_from=tmp_path / "gpt2-small-random", max_iters=2,
                                            eval_interval=2, gradient_accumulation_steps=1, n_layer=12))
    out = run(cfg, tmp_path / "ft", progress=False)
    state = json.loads((out / "state.json").read_text())
    # the shape is GPT-2's (not the config's n_layer=12), the context cropped to block_size
    assert state["model_config"] | {"dropout": 0} == {"block_size": 32, "vocab_size": 50257, "n_layer": 2,
                                                       "n_head": 2, "n_embd": 32, "dropout": 0, "bias": True,
                                                       "pos_emb": "learned", "norm": "layernorm", "qk_norm": False,
                                                       "mlp": "gelu", "tie_embeddings": True, "logit_softcap": 0.0,
                                                       "zero_init": False, "rope_base": 10000.0}
    assert state["config"]["n_layer"] == 2 and state["step"] == 2
    assert math.isfinite(read_metrics(out)[-1]["val_loss"])
    # GPT-2 weights on a char-level dataset: a clear error, and nothing written
    cfg = load_config("finetune", tiny_args(tiny_dataset, init_from=tmp_path / "gpt2-small-random"))
    with pytest.raises(AtomError, match=r"needs a GPT-2 BPE dataset \(vocab 50257\) but dataset .* is char-level"):
        run(cfg, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


# --- run folders: bad state.json, a corrupt latest checkpoint, one writer -----------------------


@pytest.mark.parametrize("key,value,named", [
    ("step", "12", "key 'step' is str"), ("config", [], "key 'config' is list"),
    ("model_config", None, "key 'model_config' is NoneType"), ("best_val_loss", "low", "key 'best_val_loss' is str"),
    ("model_config.n_layer", "4", "model_config key 'n_layer' is str"),
    ("model_config.vocab_size", 0, "model_config key 'vocab_size' is missing or not positive"),
    ("model_config.wings", 2, "model_config has an unknown key 'wings'"), ("tokenizer", 7, "key 'tokenizer' is int"),
])
def test_a_state_json_with_a_wrong_type_is_one_line_naming_the_key(tiny_run, tmp_path, key, value, named):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    for folder in (run_dir, run_dir / "best", run_dir / ".prev"):
        path = folder / "state.json"
        if not path.is_file():
            continue
        state = json.loads(path.read_text())
        target, _, sub = key.partition(".")
        if sub:
            state[target][sub] = value
        else:
            state[target] = value
        path.write_text(json.dumps(state))
    r = subprocess.run(atom_cmd("sample", "--run", run_dir, "--max-new-tokens", 5), capture_output=True, text=True,
                       timeout=120, env=subprocess_env())
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and named in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one_with_a_warning(tmp_path, capsys):
    from atomlib.model.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=1, n_embd=8))
    folder = tmp_path / "run"
    ckpt.save_checkpoint(folder, model, _state(1))
    ckpt.save_checkpoint(folder, model, _state(2))  # the first is now in .prev/
    (folder / "model.safetensors").write_bytes(b"\0" * 100)  # the latest is damaged
    state, _, _ = ckpt.load_checkpoint(folder)
    err = capsys.readouterr().err
    assert state["step"] == 1
    assert err.startswith("warning: ") and "model.safetensors is corrupt" in err and ".prev (step 1)" in err
    assert err.count("\n") == 1


def test_a_second_training_into_a_locked_folder_stops_with_a_message(tiny_dataset, tmp_path):
    folder = tmp_path / "run"
    cfg = load_config("test", tiny_args(tiny_dataset, max_iters=2))
    with run_folder_lock(folder):  # another training holds the folder
        with pytest.raises(AtomError, match=rf"{folder} is being written by another training \(pid {os.getpid()}\)"):
            run(cfg, folder, progress=False)
    assert not (folder / "state.json").exists()
    run(cfg, folder, progress=False)  # released: the folder trains
    assert ckpt.load_checkpoint(folder)[0]["step"] == 2


def test_temporary_files_have_unique_names_and_stale_ones_are_swept(tmp_path):
    from atomlib.model.gpt import GPT, GPTConfig

    a, b = ckpt._tmp_name(tmp_path / "state.json"), ckpt._tmp_name(tmp_path / "state.json")
    assert a != b and a.parent == tmp_path and a.name.endswith(".tmp")
    model = GPT(GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=1, n_embd=8))
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "state.json.123-dead.tmp").write_text("half a file")  # left by a save that was killed
    ckpt.save_checkpoint(folder, model, _state(1))
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".prev/*.tmp"))
