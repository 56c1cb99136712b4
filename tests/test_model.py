"""The GPT: KV-cache equivalence, GPT-2 import parity, and the nanoGPT interface it keeps."""

from __future__ import annotations

import math
import re

import pytest
import torch

from atomlib.errors import AtomError
from atomlib.model.gpt import GPT, GPTConfig


def small_model(seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(block_size=64, vocab_size=50, n_layer=2, n_head=4, n_embd=32, dropout=0.0, bias=True)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


def one_sentence(msg: str) -> bool:
    return "\n" not in msg and msg.endswith(".") and re.search(r"[.!?]\s+[A-Z]", msg) is None


# --- KV cache ------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_kv_cache_one_token_a_step_equals_full_forward(bias):
    model = small_model(bias=bias)
    idx = torch.randint(0, 50, (3, 40))
    with torch.no_grad():
        full, _ = model(idx, all_logits=True)
        cache = model.new_cache(batch_size=3)
        first, _ = model(idx[:, :8], cache=cache, all_logits=True)  # prefill
        steps = [first]
        for t in range(8, 40):
            logits, _ = model(idx[:, t:t + 1], cache=cache)
            steps.append(logits)
    assert cache.pos == 40
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


def test_kv_cache_chunked_prefill_after_a_prefix_equals_full_forward():
    model = small_model(seed=1)
    idx = torch.randint(0, 50, (2, 30))
    with torch.no_grad():
        full, _ = model(idx, all_logits=True)
        cache = model.new_cache(batch_size=2, max_len=30)
        parts = [model(idx[:, a:b], cache=cache, all_logits=True)[0] for a, b in ((0, 7), (7, 13), (13, 14), (14, 30))]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)
    # without all_logits only the chunk's last position comes back
    cache.reset()
    with torch.no_grad():
        last, _ = model(idx[:, :12], cache=cache)
    assert last.shape == (2, 1, 50)
    torch.testing.assert_close(last[:, 0], full[:, 11], atol=1e-5, rtol=1e-4)


def test_kv_cache_fill_rows_copies_one_prompt_into_every_row_and_layer_reads_by_name():
    """A prompt prefilled once at batch 1 and copied into each row continues exactly as if each
    row had been prefilled itself; layer(i) gives that layer's keys and values up to pos."""
    model = small_model(seed=2)
    idx = torch.randint(0, 50, (1, 9))
    nxt = torch.randint(0, 50, (3, 1))
    with torch.no_grad():
        one = model.new_cache(1, max_len=9)
        model(idx, cache=one)
        rows = model.new_cache(3)
        rows.fill_rows(one)
        got, _ = model(nxt, cache=rows)
        each = model.new_cache(3)
        model(idx.expand(3, -1), cache=each)
        want, _ = model(nxt, cache=each)
    assert rows.pos == each.pos == 10
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    for i in range(model.config.n_layer):
        k, v = rows.layer(i)
        assert k.shape == v.shape == (3, model.config.n_head, 10, model.config.n_embd // model.config.n_head)
        torch.testing.assert_close(k, each.layer(i)[0], atol=1e-5, rtol=1e-4)
        assert rows.layer(i, 4)[1].shape[2] == 4


def test_forward_past_the_block_size_is_refused():
    model = small_model(block_size=16)
    with pytest.raises(ValueError, match="block size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = model.new_cache(1)
    model(torch.zeros(1, 10, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="block size"):
        model(torch.zeros(1, 7, dtype=torch.long), cache=cache)


# --- GPT-2 import --------------------------------------------------------------------------


def tiny_hf_gpt2(folder, seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    hc = GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=128, vocab_size=300,
                    bos_token_id=0, eos_token_id=0)  # GPT-2's 50256 would lie outside this vocabulary
    hf = GPT2LMHeadModel(hc).eval()
    hf.save_pretrained(folder)
    return hf


def test_from_pretrained_folder_matches_transformers_logits(tmp_path):
    hf = tiny_hf_gpt2(tmp_path)
    model = GPT.from_pretrained(tmp_path).eval()
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd) == (2, 4, 64)
    assert (model.config.block_size, model.config.vocab_size, model.config.bias) == (128, 300, True)
    idx = torch.randint(0, 300, (2, 50))
    with torch.no_grad():
        ours, _ = model(idx, all_logits=True)
        theirs = hf(idx).logits
        # the loss agrees too: HF shifts the labels itself, nanoGPT takes them pre-shifted
        _, loss = model(idx[:, :-1], idx[:, 1:])
        hf_loss = hf(idx, labels=idx).loss
    assert (ours - theirs).abs().max().item() < 1e-4
    assert abs(loss.item() - hf_loss.item()) < 1e-4
    # and so does a cached generation step
    with torch.no_grad():
        cache = model.new_cache(2)
        model(idx[:, :49], cache=cache)
        step, _ = model(idx[:, 49:], cache=cache)
    assert (step[:, 0] - theirs[:, 49]).abs().max().item() < 1e-4


def test_from_pretrained_overrides_dropout_only(tmp_path):
    tiny_hf_gpt2(tmp_path)
    assert GPT.from_pretrained(tmp_path, {"dropout": 0.2}).config.dropout == 0.2
    with pytest.raises(AssertionError):
        GPT.from_pretrained(tmp_path, {"n_layer": 3})


def test_from_pretrained_gpt2_offline_is_one_clear_sentence(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    # No network, and an empty cache: whatever this machine may have downloaded is out of reach.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(AtomError) as e:
        GPT.from_pretrained("gpt2")
    msg = str(e.value)
    assert "gpt2" in msg and "save_pretrained" in msg
    assert one_sentence(msg), msg


def test_from_pretrained_of_a_folder_without_gpt2_weights_fails_clearly(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(AtomError) as e:
        GPT.from_pretrained(tmp_path)
    assert str(tmp_path) in str(e.value) and one_sentence(str(e.value))


def test_gpt2_weights_of_another_shape_fail_clearly(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from atomlib.model.gpt2_import import copy_gpt2_weights, gpt2_shape

    hf = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=2))
    shape = gpt2_shape(hf.config)
    assert shape == dict(block_size=32, vocab_size=50, n_layer=2, n_head=2, n_embd=32, bias=True)
    wider = GPT(GPTConfig(**{**shape, "n_embd": 48}))
    with pytest.raises(AtomError) as e:
        copy_gpt2_weights(wider, hf.state_dict(), "my-gpt2")
    assert "my-gpt2" in str(e.value) and "shape" in str(e.value) and one_sentence(str(e.value))


# --- nanoGPT interface ---------------------------------------------------------------------


def test_forward_returns_logits_and_loss_like_nanogpt():
    V = 300
    model = small_model(vocab_size=V, n_embd=64)
    idx, targets = torch.randint(0, V, (4, 32)), torch.randint(0, V, (4, 32))
    logits, loss = model(idx, targets)
    assert logits.shape == (4, 32, V) and loss.dim() == 0
    # a fresh model predicts nearly uniformly: the loss starts at about ln(V)
    assert abs(loss.item() - math.log(V)) < 0.05
    logits, loss = model(idx)
    assert logits.shape == (4, 1, V) and loss is None
    assert model(idx, all_logits=True)[0].shape == (4, 32, V)
    # targets of -1 are ignored, as in nanoGPT
    masked = targets.clone()
    masked[:, 16:] = -1
    _, loss_half = model(idx, masked)
    _, loss_first = model(idx[:, :16], targets[:, :16])
    assert abs(loss_half.item() - loss_first.item()) < 1e-5


def test_loss_backpropagates_into_every_parameter():
    model = small_model().train()
    _, loss = model(torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16)))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_weight_tying():
    model = small_model()
    assert model.lm_head.weight is model.transformer.wte.weight
    # counted once
    assert len(list(model.parameters())) == len({id(p) for p in model.parameters()})


def test_get_num_params_counts_once_and_leaves_positions_out():
    model = small_model()
    c = model.config
    per_layer = (2 * 2 * c.n_embd  # two LayerNorms
                 + c.n_embd * 3 * c.n_embd + 3 * c.n_embd + c.n_embd * c.n_embd + c.n_embd  # attention
                 + c.n_embd * 4 * c.n_embd + 4 * c.n_embd + 4 * c.n_embd * c.n_embd + c.n_embd)  # MLP
    total = c.vocab_size * c.n_embd + c.block_size * c.n_embd + c.n_layer * per_layer + 2 * c.n_embd
    assert model.get_num_params(non_embedding=False) == total
    assert model.get_num_params() == total - c.block_size * c.n_embd


def test_flops_per_token_and_mfu_follow_the_palm_formula():
    model = small_model()
    c, N = model.config, model.get_num_params()
    assert model.flops_per_token() == 6 * N + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * c.block_size
    assert model.flops_per_token(16) == 6 * N + 12 * c.n_layer * c.n_embd * 16
    assert model.estimate_mfu(1000.0, 1e12) == pytest.approx(model.flops_per_token() * 1000.0 / 1e12)
    assert model.estimate_mfu(1000.0, 1e12, seq_len=16) == pytest.approx(model.flops_per_token(16) * 1e3 / 1e12)


def test_configure_optimizers_decays_matrices_only():
    model = small_model()
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-4, betas=(0.9, 0.95), device_type="cpu")
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert opt.defaults["lr"] == 3e-4 and opt.defaults["betas"] == (0.9, 0.95)
    # and it trains: a few steps on one batch lower the loss
    idx, tgt = torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16))
    model.train()
    losses = []
    for _ in range(5):
        _, loss = model(idx, tgt)
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert losses[-1] < losses[0]


def test_generate_shape_top_k_and_sliding_window():
    model = small_model(block_size=16)
    idx = torch.randint(0, 50, (2, 5))
    out = model.generate(idx, max_new_tokens=7, temperature=0.8, top_k=5)
    assert out.shape == (2, 12) and torch.equal(out[:, :5], idx)
    # past the block the window slides instead of failing
    long = model.generate(idx, max_new_tokens=40)
    assert long.shape == (2, 45) and int(long.min()) >= 0 and int(long.max()) < 50


def test_generate_is_the_decode_loop_and_reproducible_under_manual_seed():
    from atomlib.generation.engine import decode_ids
    from atomlib.generation.sampling import SamplingParams

    model = small_model()
    idx = torch.randint(0, 50, (3, 6))  # three different prompts, one per row
    torch.manual_seed(7)
    a = model.generate(idx, max_new_tokens=12, temperature=0.9, top_k=10)
    torch.manual_seed(7)
    b = model.generate(idx, max_new_tokens=12, temperature=0.9, top_k=10)
    assert torch.equal(a, b)
    # the same loop engine.generate runs: an explicit seed gives what decode_ids gives
    c = model.generate(idx, max_new_tokens=12, temperature=0.9, top_k=10, seed=3)
    p = SamplingParams(temperature=0.9, top_k=10, max_new_tokens=12, min_new_tokens=12, num_samples=3, seed=3,
                       stop_at_eot=False)
    assert torch.equal(c[:, 6:], decode_ids(model, idx, p))
    # each row continues its own prompt: row 0 alone gives row 0's tokens under greedy decoding
    g = model.generate(idx, max_new_tokens=8, temperature=0)
    assert torch.equal(g[:1], model.generate(idx[:1], max_new_tokens=8, temperature=0))


def test_generate_with_top_k_1_is_greedy():
    model = small_model()
    idx = torch.randint(0, 50, (1, 4))
    out = model.generate(idx, max_new_tokens=6, top_k=1)
    ref = idx
    with torch.no_grad():
        for _ in range(6):
            logits, _ = model(ref)
            ref = torch.cat([ref, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ref)


def test_crop_block_size():
    model = small_model(block_size=64)
    idx = torch.randint(0, 50, (2, 20))
    with torch.no_grad():
        before, _ = model(idx, all_logits=True)
    model.crop_block_size(32)
    assert model.config.block_size == 32 and model.transformer.wpe.weight.shape == (32, 32)
    with torch.no_grad():
        after, _ = model(idx, all_logits=True)
    torch.testing.assert_close(after, before)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 33, dtype=torch.long))
    assert model.new_cache(1).max_len == 32


# --- the CPU fast paths keep the math ------------------------------------------------------


def test_bf16_autocast_training_matches_float32():
    """The CPU bf16 path (matmul attention, sigmoid GELU) trains the same model: same loss at
    the start, and gradients pointing the same way."""
    model = small_model(seed=3, n_embd=64, block_size=64).train()
    idx, tgt = torch.randint(0, 50, (4, 64)), torch.randint(0, 50, (4, 64))
    _, loss32 = model(idx, tgt)
    g32 = torch.autograd.grad(loss32, list(model.parameters()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss16 = model(idx, tgt)
    g16 = torch.autograd.grad(loss16, list(model.parameters()))
    assert abs(loss16.item() - loss32.item()) < 0.02
    flat32, flat16 = torch.cat([g.flatten() for g in g32]), torch.cat([g.float().flatten() for g in g16])
    assert torch.nn.functional.cosine_similarity(flat32, flat16, dim=0) > 0.99


# --- architecture switches -------------------------------------------------------------------

MODERN = {"pos_emb": "rope", "norm": "rmsnorm", "qk_norm": True, "mlp": "relu2", "tie_embeddings": False,
          "bias": False, "logit_softcap": 15.0}
SWITCHES = [{"pos_emb": "rope"}, {"norm": "rmsnorm"}, {"qk_norm": True}, {"mlp": "relu2"}, {"tie_embeddings": False},
            {"bias": False}, {"logit_softcap": 5.0}, {"zero_init": True}, MODERN, {**MODERN, "zero_init": True}]


def _perturb(model):
    """Zero-initialised layers would make every check pass trivially: give them values."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_every_switch_gives_the_same_logits_cached_and_uncached_at_every_position(switches):
    model = _perturb(small_model(seed=4, **switches))
    idx = torch.randint(0, 50, (3, 40))
    with torch.no_grad():
        full, _ = model(idx, all_logits=True)
        cache = model.new_cache(batch_size=3)
        parts = [model(idx[:, :9], cache=cache, all_logits=True)[0]]  # a prefill,
        parts += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(9, 20)]  # single steps,
        parts.append(model(idx[:, 20:40], cache=cache, all_logits=True)[0])  # a chunk after earlier tokens
    assert full.shape == (3, 40, 50)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("switches", [{}, *SWITCHES], ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_row_cache_rows_at_different_lengths_each_equal_the_full_forward(switches):
    """Continuous batching's cache: three sequences joined at different times and decoded together,
    a row leaving mid-way and one whose window restarts, each give the logits of its own full forward."""
    model = _perturb(small_model(seed=6, **switches))
    seqs = [torch.randint(0, 50, (1, 30)) for _ in range(3)]
    starts = [5, 12, 1]  # prompt lengths: each row prefilled alone, then copied in
    with torch.no_grad():
        full = [model(s, all_logits=True)[0][0] for s in seqs]
        rows = model.new_row_cache(4)
        got = [[] for _ in seqs]
        for i, (s, t0) in enumerate(zip(seqs, starts)):
            one = model.new_cache(1, max_len=t0)
            got[i].append(model(s[:, :t0], cache=one, all_logits=True)[0][0])
            assert rows.add(one, t0) == i and rows.lengths[i] == t0
        live = [0, 1, 2]
        for step in range(18):
            if step == 10:  # row 0's request is over: it leaves, rows 1 and 2 move up
                rows.keep([1, 2])
                live = [1, 2]
            ids = torch.cat([seqs[i][:, starts[i] + step:starts[i] + step + 1] for i in live])
            logits = model(ids, cache=rows)[0][:, -1]
            for r, i in enumerate(live):
                got[i].append(logits[r:r + 1])
    for i, t0 in enumerate(starts):
        n = t0 + (10 if i == 0 else 18)
        torch.testing.assert_close(torch.cat(got[i]), full[i][:n], atol=1e-5, rtol=1e-4)
    assert rows.lengths == [starts[1] + 18, starts[2] + 18]


def test_row_cache_n_copies_of_one_prompt_and_a_replaced_row():
    model = _perturb(small_model(seed=7, pos_emb="rope"))
    idx = torch.randint(0, 50, (1, 20))
    with torch.no_grad():
        one = model.new_cache(1, max_len=8)
        model(idx[:, :8], cache=one)
        rows = model.new_row_cache(3)
        assert rows.add(one, 8, copies=3) == 0 and rows.lengths == [8, 8, 8]
        tail = model.new_cache(1, max_len=5)  # row 1 restarts from 5 tokens of its own (a slid window)
        model(idx[:, 3:8], cache=tail)
        rows.set_rows([1], tail, [0], 5)
        got = model(idx[:, 8:9].expand(3, 1), cache=rows)[0][:, -1]
        want = model(idx[:, :9], all_logits=True)[0][0, -1]
        want_tail = model(idx[:, 3:9], all_logits=True)[0][0, -1]
    torch.testing.assert_close(got[0], want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[2], want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[1], want_tail, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="no room"):
        rows.add(one, 8)


@pytest.mark.parametrize("switches", [{}, *SWITCHES], ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_prompts_of_different_lengths_prefilled_together_right_padded(switches):
    """The batcher admits several requests in one forward: their prompts but the last token,
    right-padded into one KVCache. Each row keeps only its own positions, and the step that
    feeds each row its last token gives the logits of that prompt's own full forward."""
    model = _perturb(small_model(seed=8, **switches))
    prompts = [torch.randint(0, 50, (1, n)) for n in (7, 1, 12)]
    with torch.no_grad():
        heads = [p[:, :-1] for p in prompts]
        ids = torch.zeros((3, 11), dtype=torch.long)  # padding: token 0 after each shorter head
        for i, h in enumerate(heads):
            ids[i, :h.size(1)] = h
        one = model.new_cache(3, max_len=11)
        model(ids, cache=one)
        rows = model.new_row_cache(4)
        for i, h in enumerate(heads):
            rows.add(one, h.size(1), [i])
        got = model(torch.cat([p[:, -1:] for p in prompts]), cache=rows)[0][:, -1]
        for i, p in enumerate(prompts):
            torch.testing.assert_close(got[i], model(p)[0][0, -1], atol=1e-5, rtol=1e-4)
    assert rows.lengths == [7, 1, 12]


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_every_switch_trains_every_parameter(switches):
    model = _perturb(small_model(seed=5, **switches)).train()
    _, loss = model(torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16)))
    assert math.isfinite(loss.item())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_switches_change_the_parameters_as_they_say():
    c = small_model().config
    gpt2 = {n for n, _ in small_model().named_parameters()}
    modern = dict(small_model(**MODERN).named_parameters())
    assert "transformer.wpe.weight" in gpt2 and "transformer.wpe.weight" not in modern  # rope: no position table
    assert "lm_head.weight" in modern and modern["lm_head.weight"] is not modern["transformer.wte.weight"]
    assert not any(n.endswith(".bias") for n in modern)  # no biases, and RMSNorm has none
    assert modern["transformer.h.0.ln_1.weight"].shape == (c.n_embd,)  # RMSNorm keeps a gain
    relu2 = small_model(mlp="relu2").transformer.h[0].mlp.c_fc
    assert relu2.activation == "relu2"
    # zero_init: the blocks' output projections and an untied head start at zero, so the first
    # prediction is uniform
    z = small_model(zero_init=True, tie_embeddings=False)
    assert all(float(p.detach().abs().sum()) == 0 for n, p in z.named_parameters() if n.endswith("c_proj.weight"))
    logits, _ = z(torch.randint(0, 50, (1, 8)))
    torch.testing.assert_close(logits, torch.zeros_like(logits))


def test_logit_softcap_bounds_the_logits():
    model = small_model(logit_softcap=2.0)
    with torch.no_grad():
        model.lm_head.weight.mul_(1000)  # (tied: the embedding grows too)
        logits, _ = model(torch.randint(0, 50, (2, 10)), all_logits=True)
    assert logits.abs().max() <= 2.0 and logits.abs().max() > 1.9


def test_rope_positions_are_relative_and_crop_keeps_the_function():
    model = _perturb(small_model(pos_emb="rope", block_size=64))
    idx = torch.randint(0, 50, (2, 20))
    with torch.no_grad():
        before, _ = model(idx, all_logits=True)
        model.crop_block_size(32)
        after, _ = model(idx, all_logits=True)
    torch.testing.assert_close(after, before)
    assert model.rope_cos.shape[0] == 32 and model.new_cache(1).max_len == 32
    assert "rope_cos" not in model.state_dict()  # derived from the config, never saved


def test_invalid_switches_are_refused():
    for bad in ({"pos_emb": "alibi"}, {"norm": "batchnorm"}, {"mlp": "swiglu"}):
        with pytest.raises(ValueError):
            GPTConfig(**bad)
    with pytest.raises(ValueError):
        GPTConfig(n_embd=30, n_head=2, pos_emb="rope")  # odd head size cannot rotate in pairs


def test_param_kinds_cover_every_parameter_once():
    for switches in ({}, MODERN):
        model = small_model(**switches)
        kinds = model.param_kinds()
        flat = [id(p) for ps in kinds.values() for p in ps]
        assert sorted(flat) == sorted(id(p) for p in model.parameters())
        assert all(p.dim() == 2 for p in kinds["matrix"]) and all(p.dim() == 1 for p in kinds["scalar"])
        assert bool(kinds["head"]) == (not model.config.tie_embeddings)


def test_a_run_saved_before_the_switches_loads_with_gpt2_layout():
    old = {"block_size": 64, "vocab_size": 50, "n_layer": 2, "n_head": 4, "n_embd": 32, "dropout": 0.0, "bias": True}
    c = GPTConfig(**old)
    assert (c.pos_emb, c.norm, c.qk_norm, c.mlp, c.tie_embeddings, c.logit_softcap) == \
        ("learned", "layernorm", False, "gelu", True, 0.0)
    assert {n for n, _ in GPT(c).state_dict().items()} == {n for n, _ in small_model().state_dict().items()}
