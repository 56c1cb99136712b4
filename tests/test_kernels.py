"""atomlib.model.kernels: the CPU fast paths the model's one forward calls compute the same function,
and never serve weights from before an update; the thread choice behind training and decoding."""

import pytest
import torch
from torch.nn import functional as F

from atomlib.model import kernels
from atomlib.device import ThreadChoice, autocast
from atomlib.errors import AtomError
from atomlib.model.gpt import GPT, GPTConfig
from atomlib.generation.engine import generate
from atomlib.generation.sampling import SamplingParams
from atomlib.data.tokenizer import CharTokenizer

TOK = CharTokenizer(sorted(set("abcdefghijklmnopqrstuvwxyz .,\n")))
CPU = torch.device("cpu")


def tiny_model(seed=0, n_embd=64, block_size=48, **switches):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=block_size, vocab_size=TOK.vocab_size, n_layer=2, n_head=4, n_embd=n_embd,
                         dropout=0.0, **switches)).eval()


@pytest.mark.parametrize("activation", [None, "gelu", "relu2"])
def test_bf16_linear_is_a_bf16_product(activation):
    torch.manual_seed(0)
    lin = kernels.Linear(64, 96, bias=True, activation=activation)
    x = torch.randn(5, 64)
    want = F.linear(x.bfloat16().float(), lin.weight.bfloat16().float(), lin.bias.bfloat16().float())
    want = kernels.activate(want, activation)
    store = {}
    with torch.no_grad(), autocast(CPU, torch.bfloat16), kernels.bf16_weights(store):
        got = lin(x)
        assert lin(x.unsqueeze(0)).shape == (1, 5, 96)  # any leading shape, as F.linear
    assert got.dtype == torch.bfloat16 and got.shape == (5, 96) and lin in store
    assert torch.allclose(got.float(), want, rtol=2e-2, atol=2e-2)
    assert store[lin][2] == kernels.onednn_bf16_works()  # packed for oneDNN where this torch has it


def test_outside_a_store_or_with_gradients_linear_is_plain_autocast():
    torch.manual_seed(0)
    lin = kernels.Linear(16, 8)
    x = torch.randn(3, 16)
    with autocast(CPU, torch.bfloat16):
        with torch.no_grad():
            plain = lin(x)  # no store: autocast's own linear
        with kernels.bf16_weights({}):
            y = lin(x.requires_grad_())  # gradients wanted: autocast's own linear too
    assert plain.dtype == y.dtype == torch.bfloat16 and y.requires_grad


def test_without_the_private_onednn_ops_the_public_path_computes_the_same_function(monkeypatch):
    """A torch whose torch.ops.mkldnn lacks the packed bf16 linear: the check says so, and the
    cached bf16 weights go through F.linear, giving a bf16 product (activations included) and a
    bf16 decoding as close to the float32 model as the packed path must be."""
    monkeypatch.setattr(torch.ops, "mkldnn", object())  # no _reorder_linear_weight, no _linear_pointwise
    monkeypatch.setattr(kernels, "_ONEDNN_OK", None)  # forget this process's earlier answer
    assert kernels.onednn_bf16_works() is False
    torch.manual_seed(0)
    x = torch.randn(5, 64)
    for activation in (None, "gelu", "relu2"):
        lin = kernels.Linear(64, 96, bias=True, activation=activation)
        want = kernels.activate(F.linear(x.bfloat16(), lin.weight.bfloat16(), lin.bias.bfloat16()), activation)
        store = {}
        with torch.no_grad(), autocast(CPU, torch.bfloat16), kernels.bf16_weights(store):
            got = lin(x)
        assert store[lin][2] is False  # not packed
        assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    model = tiny_model(n_embd=128)
    assert next_token_kl(model, torch.randint(0, TOK.vocab_size, (2, 40))) < 1e-4


def next_token_kl(model, idx) -> float:
    """Largest KL(model's float32 next-token distribution || bf16 decoding with the cache) over 20 steps."""
    with torch.no_grad():
        want = torch.log_softmax(model(idx, all_logits=True)[0], -1)
    cache = model.new_cache(idx.size(0))
    with torch.inference_mode(), autocast(CPU, torch.bfloat16), kernels.bf16_weights({}):
        got = [model(idx[:, :20], cache=cache)[0]] + [model(idx[:, t:t + 1], cache=cache)[0] for t in range(20, 40)]
    kl = 0.0
    for g, e in zip(got, range(19, 40)):
        p, q = want[:, e], torch.log_softmax(g[:, -1].float(), -1)
        kl = max(kl, float((p.exp() * (p - q)).sum(-1).max()))
    return kl


@pytest.mark.parametrize("switches", [{}, {"pos_emb": "rope", "norm": "rmsnorm", "qk_norm": True, "mlp": "relu2",
                                           "tie_embeddings": False, "bias": False}])
def test_bf16_decoding_stays_close_to_the_float32_model(switches, monkeypatch):
    """On oneDNN's packed bf16 weights where the CPU has them, else on bf16 weights through F.linear."""
    model = tiny_model(n_embd=128, **switches)
    with torch.no_grad():  # norm gains away from 1, so a mix-up of them shows
        for name, p in model.named_parameters():
            if ".ln_" in name and name.endswith("weight"):
                p.add_(0.3 * torch.randn_like(p))
    idx = torch.randint(0, TOK.vocab_size, (2, 40))
    assert next_token_kl(model, idx) < 1e-4
    # the measure sees a real mistake: decoding steps that attend to the new token only
    real = kernels.cached_attention
    monkeypatch.setattr("atomlib.model.cache.cached_attention", lambda q, k, v, past: real(q, k[:, :, past:], v[:, :, past:], 0))
    assert next_token_kl(model, idx) > 1e-3


def test_a_generation_after_an_optimizer_step_uses_the_new_weights():
    """Fused AdamW updates weights without bumping their version counter, so bf16 copies must
    live for one generation only: the next one sees the updated model."""
    model = tiny_model()
    p = SamplingParams(temperature=0, max_new_tokens=20, precision="bfloat16")
    before = generate(model, TOK, "the ", p)[0].tokens
    opt = torch.optim.AdamW(model.parameters(), lr=0.5, fused=True)
    model.train()
    x = torch.randint(0, TOK.vocab_size, (2, 16))
    model(x, x)[1].backward()
    opt.step()
    model.eval()
    after = generate(model, TOK, "the ", p)[0].tokens
    fresh = GPT(model.config).eval()
    fresh.load_state_dict(model.state_dict())
    assert after == generate(fresh, TOK, "the ", p)[0].tokens  # the same as a model never sampled before
    assert after != before


def test_seeded_generation_is_reproducible_in_every_precision():
    model = tiny_model()
    for precision in ("float32", "bfloat16", "auto"):
        p = SamplingParams(max_new_tokens=30, num_samples=2, seed=5, precision=precision)
        a, b = generate(model, TOK, "the ", p), generate(model, TOK, "the ", p)
        assert [g.tokens for g in a] == [g.tokens for g in b] and len(a[0].tokens) == 30


def test_precision_is_checked():
    with pytest.raises(AtomError, match="precision"):
        SamplingParams(precision="fp8").checked()


def test_auto_precision_follows_the_hardware_and_the_model_size(monkeypatch):
    from atomlib import device
    from atomlib.generation import engine

    small = tiny_model()
    big = GPT(GPTConfig(block_size=16, vocab_size=TOK.vocab_size, n_layer=6, n_head=8, n_embd=512))
    assert sum(p.numel() for p in big.parameters()) >= engine.BF16_DECODE_MIN_PARAMS
    monkeypatch.setattr(device, "cpu_bf16_is_fast", lambda: True)
    assert engine.matmul_dtype("auto", CPU, big) == torch.bfloat16
    assert engine.matmul_dtype("auto", CPU, small) == torch.float32  # weights in cache: float32 is faster
    assert engine.matmul_dtype("bfloat16", CPU, small) == torch.bfloat16  # asked for: given
    monkeypatch.setattr(device, "cpu_bf16_is_fast", lambda: False)  # emulated bf16: never by default
    assert engine.matmul_dtype("auto", CPU, big) == torch.float32


# --- attention and activations -------------------------------------------------------------


def test_matmul_attention_equals_sdpa_with_gradients():
    q, k, v = (torch.randn(2, 3, 17, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ours = kernels.causal_attention_matmul(q, k, v)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        torch.testing.assert_close(a, b)
    assert kernels.matmul_attention_is_faster(torch.empty(1, 1, 256, 8, dtype=torch.bfloat16))
    assert not kernels.matmul_attention_is_faster(torch.empty(1, 1, 256, 8))  # float32: SDPA
    assert not kernels.matmul_attention_is_faster(torch.empty(1, 1, 1024, 8, dtype=torch.bfloat16))


def test_cached_attention_of_a_chunk_after_earlier_tokens_is_causal():
    q, k, v = (torch.randn(2, 3, 10, 8, dtype=torch.float64) for _ in range(3))
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    chunk = kernels.cached_attention(q[:, :, 6:], k, v, past=6)  # queries 6..9 against keys 0..9
    torch.testing.assert_close(chunk, full[:, :, 6:])
    one = kernels.cached_attention(q[:, :, 9:], k, v, past=9)
    torch.testing.assert_close(one, full[:, :, 9:])


def test_sigmoid_form_of_tanh_gelu_is_the_same_function():
    x = (torch.randn(200, dtype=torch.float64) * 4).requires_grad_()
    assert torch.autograd.gradcheck(kernels.SigmoidTanhGELU.apply, (x,))
    torch.testing.assert_close(kernels.SigmoidTanhGELU.apply(x), F.gelu(x, approximate="tanh"))
    xb = torch.randn(4096).bfloat16()
    torch.testing.assert_close(kernels.activate(xb, "gelu").float(), F.gelu(xb.float(), approximate="tanh"),
                               atol=0.02, rtol=0.02)
    torch.testing.assert_close(kernels.activate(x, "relu2"), F.relu(x) ** 2)


# --- one thread or all ---------------------------------------------------------------------


def test_thread_choice_keeps_the_faster_count(monkeypatch):
    monkeypatch.delenv("ATOM_DECODE_THREADS", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    set_to = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    t = ThreadChoice(CPU, "ATOM_DECODE_THREADS")
    assert t.candidates == [4, 1] and not t.decided
    t.on()
    speed = {1: 3.0, 4: 1.0}  # seconds per step: four threads win here
    seen = []
    for _ in range(t.probe_end + 5):
        seen.append(t.choice)
        t.record(speed[t.choice])
    assert set(seen[:t.PROBE]) == {1, 4}  # the probe tries both
    assert seen[-5:] == [4] * 5 and set_to[-1] == 4 and t.decided
    speed = {1: 1.0, 4: 3.0}  # the machine got busy: the next probe goes back to one thread
    for _ in range(t.REPROBE + 2 * t.PROBE + 5):
        t.record(speed[t.choice])
    assert t.choice == 1
    t.off()
    assert set_to[-1] == 4  # torch's own setting back


def test_thread_choice_once_fixed_or_switched_off(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    once = ThreadChoice(CPU, "ATOM_TRAIN_THREADS", probe=3, warmup=1, reprobe=None)
    for _ in range(40):
        once.record({1: 1.0, 2: 2.0}[once.choice])
    assert once.choice == 1 and once.decided  # decided once, never probed again
    close = ThreadChoice(CPU, "ATOM_TRAIN_THREADS", probe=3, warmup=1, reprobe=None)
    for _ in range(20):
        close.record({1: 0.95, 2: 1.0}[close.choice])
    assert close.choice == 2  # 5% is within a probe's noise: all threads stay
    assert ThreadChoice(CPU, "ATOM_TRAIN_THREADS", fixed=2).candidates == [2]  # a resumed run's own count
    assert ThreadChoice(CPU, "ATOM_DECODE_THREADS", most=1).candidates == [1]  # a core kept for others
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert ThreadChoice(CPU, "ATOM_DECODE_THREADS", most=3).candidates == [3, 1]
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setenv("ATOM_DECODE_THREADS", "2")
    assert ThreadChoice(CPU, "ATOM_DECODE_THREADS", most=1).candidates == [2]  # the person's setting wins
    monkeypatch.setenv("ATOM_DECODE_THREADS", "1")
    assert ThreadChoice(CPU, "ATOM_DECODE_THREADS").candidates == [1]
    monkeypatch.setenv("ATOM_DECODE_THREADS", "0")
    assert ThreadChoice(CPU, "ATOM_DECODE_THREADS").candidates == []
    monkeypatch.delenv("ATOM_DECODE_THREADS")
    assert ThreadChoice(CPU, "ATOM_DECODE_THREADS", enabled=False).candidates == []
    assert ThreadChoice(torch.device("meta"), "ATOM_DECODE_THREADS").candidates == []
