"""atomlib.engine: the inference forward generation runs, against the model's own forward."""

import pytest
import torch
from torch.nn import functional as F

from atomlib import engine
from atomlib.errors import AtomError
from atomlib.model import GPT, GPTConfig
from atomlib.sampling import SamplingParams, _DecodeThreads, generate
from atomlib.tokenizer import CharTokenizer

TOK = CharTokenizer(sorted(set("abcdefghijklmnopqrstuvwxyz .,\n")))


def tiny_model(bias=True, seed=0, n_embd=64, block_size=48):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=block_size, vocab_size=TOK.vocab_size, n_layer=2, n_head=4, n_embd=n_embd,
                         dropout=0.0, bias=bias)).eval()


def run_engine(eng, model, idx, chunks):
    """Feed idx (B, T) through the engine in the given chunk lengths; logits after each chunk."""
    cache = model.new_cache(idx.size(0))
    out, t = [], 0
    with torch.inference_mode():
        for n in chunks:
            out.append(eng.forward(idx[:, t:t + n], cache))
            t += n
    assert cache.pos == t
    return out, cache


@pytest.mark.parametrize("batch,bias", [(1, False), (3, True)])
def test_float32_engine_is_the_models_forward(batch, bias):
    model = tiny_model(bias=bias)
    idx = torch.randint(0, TOK.vocab_size, (batch, 30))
    chunks = [10, 1, 1, 5, 1, 12]  # prefill, steps, a chunk after earlier tokens (the masked case)
    got, cache = run_engine(engine.Engine(model, torch.float32), model, idx, chunks)
    with torch.no_grad():
        want = model(idx, all_logits=True)[0]
        ref_cache = model.new_cache(batch)
        model(idx, cache=ref_cache)
    ends = torch.tensor(chunks).cumsum(0) - 1
    for g, e in zip(got, ends):
        assert torch.allclose(g, want[:, e], atol=1e-5)
    assert torch.allclose(cache.k[:, :, :, :30], ref_cache.k[:, :, :, :30], atol=1e-6)


def test_engine_refuses_to_run_past_the_block():
    model = tiny_model(block_size=8)
    eng = engine.Engine(model, torch.float32)
    cache = model.new_cache(1)
    with torch.inference_mode():
        eng.forward(torch.zeros(1, 8, dtype=torch.long), cache)
        with pytest.raises(ValueError, match="block size is 8"):
            eng.forward(torch.zeros(1, 1, dtype=torch.long), cache)


needs_onednn = pytest.mark.skipif(not engine.onednn_bf16_works(), reason="no oneDNN bf16 linear in this torch")


@needs_onednn
def test_packed_bf16_linear_is_a_bf16_product():
    torch.manual_seed(0)
    w, b, x = torch.randn(96, 64), torch.randn(96), torch.randn(5, 64)
    lin = engine.Linear(w, b, torch.bfloat16)
    assert lin.packed
    got = lin(x)
    assert got.dtype == torch.bfloat16 and got.shape == (5, 96)
    # the same product on bf16-rounded operands, accumulated in float32: equal up to the output's rounding
    want = F.linear(x.bfloat16().float(), w.bfloat16().float(), b.bfloat16().float())
    assert torch.allclose(got.float(), want, rtol=1e-2, atol=1e-2)
    assert lin(x.unsqueeze(0)).shape == (1, 5, 96)  # any leading shape, as F.linear
    fused = engine.Linear(w, b, torch.bfloat16, gelu=True)(x)  # GELU applied inside the product
    assert torch.allclose(fused.float(), F.gelu(want, approximate="tanh"), rtol=1e-2, atol=1e-2)


def next_token_kl(model, eng, idx) -> float:
    """Largest KL(model's float32 next-token distribution || the engine's) over 20 decode steps."""
    got, _ = run_engine(eng, model, idx, [20] + [1] * 20)
    with torch.no_grad():
        want = model(idx, all_logits=True)[0]
    kl = 0.0
    for g, e in zip(got, range(19, 40)):
        p, q = torch.log_softmax(want[:, e], -1), torch.log_softmax(g, -1)
        kl = max(kl, float((p.exp() * (p - q)).sum(-1).max()))
    return kl


@needs_onednn
def test_bf16_engine_stays_close_to_the_float32_model():
    model = tiny_model(n_embd=128)
    with torch.no_grad():  # LayerNorm parameters away from 1 and 0, so a mix-up of them shows
        for name, p in model.named_parameters():
            if ".ln_" in name:
                p.add_(0.3 * torch.randn_like(p))
    idx = torch.randint(0, TOK.vocab_size, (2, 40))
    assert next_token_kl(model, engine.Engine(model, torch.bfloat16), idx) < 1e-4  # measured: ~2e-6
    # the measure can see a real mistake: the second block's ln_2 with ln_1's parameters
    wrong = engine.Engine(model, torch.bfloat16)
    a = wrong.layers[1]
    wrong.layers[1] = (a[0], a[1], a[2], a[0], a[4], a[5])
    assert next_token_kl(model, wrong, idx) > 1e-3  # measured: ~5e-3


def test_engine_for_builds_once_and_follows_weight_updates():
    model = tiny_model()
    a = engine.engine_for(model, torch.float32)
    assert a is engine.engine_for(model, torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    _, loss = model(torch.randint(0, TOK.vocab_size, (2, 16)), torch.randint(0, TOK.vocab_size, (2, 16)))
    loss.backward()
    opt.step()  # in place: the engine must not go on with the old weights
    model.eval()
    b = engine.engine_for(model, torch.float32)
    assert b is not a
    idx = torch.randint(0, TOK.vocab_size, (1, 12))
    got, _ = run_engine(b, model, idx, [12])
    with torch.no_grad():
        assert torch.allclose(got[0], model(idx)[0][:, -1], atol=1e-5)


def test_engine_for_leaves_other_models_alone():
    class MyGPT(GPT):
        pass

    model = MyGPT(tiny_model().config)
    assert engine.engine_for(model) is None
    assert engine.engine_for(torch.nn.Linear(2, 2)) is None


def test_seeded_generation_is_reproducible_in_every_precision():
    model = tiny_model()
    for precision in ("float32", "bfloat16", "auto"):
        p = SamplingParams(max_new_tokens=30, num_samples=2, seed=5, precision=precision)
        a, b = generate(model, TOK, "the ", p), generate(model, TOK, "the ", p)
        assert [g.tokens for g in a] == [g.tokens for g in b] and len(a[0].tokens) == 30


def test_precision_is_checked():
    with pytest.raises(AtomError, match="precision"):
        SamplingParams(precision="fp8").checked()


def test_decode_threads_keep_the_faster_count(monkeypatch):
    monkeypatch.delenv("ATOM_DECODE_THREADS", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    set_to = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    t = _DecodeThreads(torch.device("cpu"))
    assert t.candidates == [1, 4]
    t.on()
    speed = {1: 3.0, 4: 1.0}  # seconds per step: four threads win here
    seen = []
    for _ in range(t.probe_end + 5):
        seen.append(t.choice)
        t.record(speed[t.choice])
    assert set(seen[:t.PROBE]) == {1, 4}  # the probe tries both
    assert seen[-5:] == [4] * 5 and set_to[-1] == 4
    speed = {1: 1.0, 4: 3.0}  # the machine got busy: the next probe goes back to one thread
    for _ in range(t.REPROBE + 2 * t.PROBE + 5):
        t.record(speed[t.choice])
    assert t.choice == 1
    t.off()
    assert set_to[-1] == 4  # torch's own setting back


def test_decode_threads_env_and_devices(monkeypatch):
    monkeypatch.setenv("ATOM_DECODE_THREADS", "1")
    assert _DecodeThreads(torch.device("cpu")).candidates == [1]
    monkeypatch.setenv("ATOM_DECODE_THREADS", "0")
    assert _DecodeThreads(torch.device("cpu")).candidates == []
    monkeypatch.delenv("ATOM_DECODE_THREADS")
    assert _DecodeThreads(torch.device("cpu"), tiny_ops=False).candidates == []
    assert _DecodeThreads(torch.device("meta")).candidates == []


def test_auto_precision_follows_the_hardware_and_the_model_size(monkeypatch):
    from atomlib import device, sampling

    small = tiny_model()
    big = GPT(GPTConfig(block_size=16, vocab_size=TOK.vocab_size, n_layer=4, n_head=4, n_embd=256))
    assert sum(p.numel() for p in big.parameters()) >= sampling.BF16_DECODE_MIN_PARAMS
    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cpu_bf16_is_fast", lambda: True)
    assert sampling.matmul_dtype("auto", cpu, big) == torch.bfloat16
    assert sampling.matmul_dtype("auto", cpu, small) == torch.float32  # weights in cache: float32 is faster
    assert sampling.matmul_dtype("bfloat16", cpu, small) == torch.bfloat16  # asked for: given
    monkeypatch.setattr(device, "cpu_bf16_is_fast", lambda: False)  # emulated bf16: never by default
    assert sampling.matmul_dtype("auto", cpu, big) == torch.float32


def test_an_engine_does_not_keep_its_model_alive():
    import gc
    import weakref

    model = tiny_model()
    assert engine.engine_for(model, torch.float32) is not None
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None  # nothing the engine cache holds refers back to the model


@pytest.mark.parametrize("block_size", [1, 2, 3])
def test_tiny_blocks_are_checked_too(block_size):
    model = tiny_model(block_size=block_size)
    assert engine.mirrors(model)
    g = generate(model, TOK, "ab", SamplingParams(temperature=0, max_new_tokens=5, precision="float32"))[0]
    assert len(g.tokens) == 5


def test_the_mirror_check_runs_without_tf32_and_restores_it(monkeypatch):
    seen = []
    forward = engine.Engine.forward
    monkeypatch.setattr(engine.Engine, "forward",
                        lambda self, ids, cache: seen.append(torch.backends.cuda.matmul.allow_tf32) or forward(self, ids, cache))
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # as the trainer leaves it on CUDA
    try:
        assert engine.mirrors(tiny_model())
        assert seen and not any(seen) and torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
