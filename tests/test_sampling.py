"""Generation: logits processing, the KV-cached loop against a no-cache reference, stop rules,
streaming, batches, and `atom sample`."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import torch
import torch.nn as nn

from atomlib.errors import AtomError
from atomlib.model.gpt import GPT, GPTConfig
from atomlib.generation.engine import generate, generate_nocache, stream
from atomlib.generation.textstream import TextTracker
from atomlib.generation.sampling import (
    TOP_P_FIRST,
    RowControls,
    SamplingParams,
    TokenSampler,
    draw,
    apply_frequency_presence,
    apply_repetition_penalty,
    filter_logits,
    next_token_probs,
    sample_from_probs,
    top_k_filter,
    top_p_filter,
)
from atomlib.data.tokenizer import CharTokenizer
from conftest import atom_cmd

CHARS = sorted(set("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,;:!?'\n-"))
TOK = CharTokenizer(CHARS)


def tiny_model(block_size=32, n_layer=2, n_embd=32, bias=False, seed=0, vocab=None):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=block_size, vocab_size=vocab or TOK.vocab_size, n_layer=n_layer, n_head=2,
                         n_embd=n_embd, dropout=0.0, bias=bias)).eval()


# --- stub models: known logits, so the loop's wiring can be checked exactly ----------------------


class _StubCache:
    def __init__(self, batch, max_len):
        self.pos, self.max_len = 0, max_len

    def fill_rows(self, one):  # the loop copies a batch-1 prefill into every row
        self.pos = one.pos

    def reset(self):
        self.pos = 0


class ScriptModel(nn.Module):
    """Greedy decoding of this model spells `script` (after any prompt): the logits at absolute
    position t favour script[t - prompt_len]. Records the batch size of every forward call."""

    def __init__(self, tokenizer, script: str, prompt_len: int, block_size=256, second=None):
        super().__init__()
        self.config = GPTConfig(block_size=block_size, vocab_size=tokenizer.vocab_size, n_layer=1, n_head=1, n_embd=4)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.ids = tokenizer.encode(script)
        self.prompt_len = prompt_len
        self.second = second  # a token id given the second-highest logit everywhere
        self.calls = []

    def new_cache(self, batch_size, max_len=None, device=None, dtype=None):
        return _StubCache(batch_size, max_len or self.config.block_size)

    def forward(self, idx, targets=None, cache=None, all_logits=False):
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        self.calls.append(B)
        if cache is not None:
            cache.pos += T
        # without a cache, the position is unknown to the stub: count from the prompt length
        nxt = (start + T if cache is not None else T) - self.prompt_len
        logits = torch.zeros(B, 1, self.config.vocab_size)
        if self.second is not None:
            logits[:, :, self.second] = 5.0
        if 0 <= nxt < len(self.ids):
            logits[:, :, self.ids[nxt]] = 10.0
        return logits, None


class ConstModel(nn.Module):
    """The same logits at every step: token 0 best, token 1 a close second, the rest far below."""

    def __init__(self, vocab=8, block_size=64, values=(3.0, 2.9)):
        super().__init__()
        self.config = GPTConfig(block_size=block_size, vocab_size=vocab, n_layer=1, n_head=1, n_embd=4)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.logits = torch.full((vocab,), -5.0)
        self.logits[: len(values)] = torch.tensor(values)

    def new_cache(self, batch_size, max_len=None, device=None, dtype=None):
        return _StubCache(batch_size, max_len or self.config.block_size)

    def forward(self, idx, targets=None, cache=None, all_logits=False):
        if cache is not None:
            cache.pos += idx.size(1)
        return self.logits.expand(idx.size(0), 1, -1).clone(), None


class NumTok:
    """A tokenizer whose tokens are the characters '0'..'7' (for ConstModel)."""

    kind, eot_token, vocab_size = "char", None, 8
    chars = [str(i) for i in range(8)]

    def encode(self, text):
        return [int(c) for c in text if c.isdigit()]

    def decode(self, ids):
        return "".join(str(int(i)) for i in ids)


# --- parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize("key,value", [("temperature", -1.0), ("top_k", -3), ("top_p", 1.5), ("top_p", 0.0),
                                       ("repetition_penalty", 0.0), ("max_new_tokens", -1), ("num_samples", 0),
                                       ("min_new_tokens", 500), ("temperature", float("nan"))])
def test_bad_parameters_name_the_key(key, value):
    with pytest.raises(AtomError, match=key):
        SamplingParams(**{key: value}).checked()


def test_stop_given_as_a_string_becomes_a_tuple():
    assert SamplingParams(stop="\n\n").stop == ("\n\n",)
    assert SamplingParams(top_k=0).top_k is None


# --- logits processing on a known distribution ---------------------------------------------------

P = torch.tensor([0.5, 0.3, 0.15, 0.05])


def probs_after(fn, *args):
    return torch.softmax(fn(P.log().unsqueeze(0), *args), dim=-1)[0]


def test_top_k_keeps_the_k_most_likely():
    assert torch.allclose(probs_after(top_k_filter, 2), torch.tensor([0.625, 0.375, 0.0, 0.0]))
    assert torch.allclose(probs_after(top_k_filter, 1), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert torch.allclose(probs_after(top_k_filter, 10), P)  # k beyond the vocabulary: unchanged


def test_top_p_keeps_the_smallest_set_reaching_p():
    assert torch.allclose(probs_after(top_p_filter, 0.7), torch.tensor([0.625, 0.375, 0.0, 0.0]))
    assert torch.allclose(probs_after(top_p_filter, 0.85), torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95)
    assert torch.allclose(probs_after(top_p_filter, 0.2), torch.tensor([1.0, 0.0, 0.0, 0.0]))  # at least one
    assert torch.allclose(probs_after(top_p_filter, 1.0), P)


def test_top_p_works_per_row_in_any_order():
    perm = torch.tensor([2, 0, 3, 1])
    logits = torch.stack([P.log()[perm], P.log()])
    out = torch.softmax(top_p_filter(logits, 0.7), dim=-1)
    assert torch.allclose(out[0], torch.tensor([0.625, 0.375, 0.0, 0.0])[perm])
    assert torch.allclose(out[1], torch.tensor([0.625, 0.375, 0.0, 0.0]))


def _top_p_by_sorting(logits, p):
    """The textbook nucleus: sort every token, keep those whose more likely tokens hold < p."""
    probs, order = torch.softmax(logits, -1).sort(-1, descending=True)
    keep_sorted = (probs.cumsum(-1) - probs) < p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


def test_top_p_keeps_what_a_full_sort_keeps_when_the_nucleus_is_past_the_first_look():
    """The nucleus is looked for among the top TOP_P_FIRST tokens first; flat rows (the nucleus
    holds most of 3,000 tokens) need the whole vocabulary, peaked ones do not, both exact."""
    gen = torch.Generator().manual_seed(3)
    flat = torch.randn((2, 3000), generator=gen) * 0.1
    peaked = torch.randn((2, 3000), generator=gen) * 6
    for logits in (flat, peaked, torch.cat([flat, peaked])):
        for p in (0.5, 0.9, 0.99):
            assert torch.equal(top_p_filter(logits, p).isinf(), _top_p_by_sorting(logits, p).isinf())
    assert (~top_p_filter(flat, 0.9).isinf()).sum(-1).min() > TOP_P_FIRST  # the wider look was needed


def test_per_row_controls_filter_each_row_as_its_own_setting_would():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn((3, 500), generator=gen) * 3
    k = torch.tensor([[5], [0], [40]])  # 0: the row is not filtered
    got = top_k_filter(logits, k)
    assert torch.equal(got[0], top_k_filter(logits[:1], 5)[0]) and torch.equal(got[1], logits[1])
    assert torch.equal(got[2], top_k_filter(logits[2:], 40)[0])
    p = torch.tensor([[0.5], [float("inf")], [0.95]])  # inf: the row is not filtered
    got = top_p_filter(logits, p)
    assert torch.equal(got[0], top_p_filter(logits[:1], 0.5)[0]) and torch.equal(got[1], logits[1])
    assert torch.equal(got[2], top_p_filter(logits[2:], 0.95)[0])


def test_one_draw_over_several_generations_gives_each_what_it_draws_alone():
    """draw() over a batch of generations with their own settings (continuous batching) gives
    every row the token and log-probability its own sampler gives it alone."""
    V = 60
    settings = [SamplingParams(temperature=0.9, top_k=8, seed=1, num_samples=2),
                SamplingParams(temperature=0, repetition_penalty=1.3, seed=2),
                SamplingParams(temperature=1.2, top_p=0.8, frequency_penalty=0.4, presence_penalty=0.3,
                               min_new_tokens=3, seed=3)]
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn((4, V), generator=gen) * 2
    logits[3, 7] = 30.0  # end-of-text all but certain in row 3

    def samplers():
        seqs = [torch.randint(0, V, (p.num_samples, 12), generator=torch.Generator().manual_seed(i))
                for i, p in enumerate(settings)]
        return [TokenSampler(p, seq, 10, V, eot=7) for p, seq in zip(settings, seqs)]

    alone = [s.draw(logits[r:r + s.rows], 1) for s, r in zip(samplers(), (0, 2, 3))]
    together = draw(logits, RowControls(samplers()), [1, 1, 1])
    assert torch.equal(together[0], torch.cat([a[0] for a in alone]))
    assert torch.equal(together[1], torch.cat([a[1] for a in alone]))
    assert together[0][3] != 7  # row 3's sampler bans end-of-text before its third token
    assert draw(logits, RowControls(samplers()), [1, 1, 3])[0][3] == 7  # and not after


def test_top_k_then_top_p_and_temperature():
    out = next_token_probs(P.log().unsqueeze(0), SamplingParams(temperature=1.0, top_k=3, top_p=0.9))[0]
    # top-3 renormalised: .5/.95, .3/.95, .15/.95; mass before the third is .842 < .9, so all three stay
    assert torch.allclose(out, torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95, atol=1e-6)
    hot = next_token_probs(P.log().unsqueeze(0), SamplingParams(temperature=2.0))[0]
    assert torch.allclose(hot, P.sqrt() / P.sqrt().sum(), atol=1e-6)
    greedy = next_token_probs(P.log().unsqueeze(0), SamplingParams(temperature=0))[0]
    assert greedy.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert torch.equal(filter_logits(P.log().unsqueeze(0)), P.log().unsqueeze(0))


def test_sampling_draws_from_the_distribution():
    gen = torch.Generator().manual_seed(0)
    draws = sample_from_probs(torch.tensor([0.5, 0.3, 0.2, 0.0]).expand(40000, -1), torch.rand((40000, 1), generator=gen))
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.01)
    assert freq[3] == 0  # a token with probability 0 is never drawn


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, -1.0]]
    assert torch.equal(apply_repetition_penalty(logits, seen, 1.0), logits)


def test_frequency_and_presence_penalties():
    logits = torch.zeros(1, 3)
    counts = torch.tensor([[3.0, 1.0, 0.0]])
    assert torch.allclose(apply_frequency_presence(logits, counts, 0.5, 0.0), torch.tensor([[-1.5, -0.5, 0.0]]))
    assert torch.allclose(apply_frequency_presence(logits, counts, 0.0, 0.7), torch.tensor([[-0.7, -0.7, 0.0]]))
    assert torch.allclose(apply_frequency_presence(logits, counts, 0.5, 0.7), torch.tensor([[-2.2, -1.2, 0.0]]))


def test_token_sampler_forgets_what_leaves_the_repetition_window():
    """The penalty looks back over the last repetition_window tokens of prompt + generation: a
    token written at step t is counted, the one that slid out of the window no longer is."""
    seq = torch.tensor([[0, 1, 0, 0]])  # prompt 0 1; the loop writes the new tokens after it
    params = SamplingParams(temperature=0, repetition_penalty=100.0, repetition_window=2, max_new_tokens=2)
    sampler = TokenSampler(params, seq, 2, vocab_size=3, eot=None)
    logits = torch.tensor([[3.0, 2.0, 1.0]])
    nxt, lp = sampler.draw(logits, 0)
    assert nxt.tolist() == [2]  # 0 and 1 are in the window: penalised below token 2
    assert lp.item() == pytest.approx(torch.log_softmax(logits, -1)[0, 2].item())  # the model's own log-prob
    seq[:, 2] = nxt
    sampler.observe(seq, 2)  # the window is now [1, 2]: token 0 left it
    assert sampler.draw(logits, 1)[0].tolist() == [0]


def test_token_sampler_bans_end_of_text_before_min_new_tokens_and_is_seeded():
    seq = torch.zeros((4, 6), dtype=torch.long)
    params = SamplingParams(temperature=1.0, min_new_tokens=2, max_new_tokens=4, num_samples=4, seed=9)
    logits = torch.tensor([[0.0, 0.0, 9.0]]).expand(4, -1)  # token 2 (end-of-text here) all but certain
    a = TokenSampler(params, seq, 2, vocab_size=3, eot=2)
    assert 2 not in a.draw(logits, 1)[0].tolist()
    assert a.draw(logits, 2)[0].tolist() == [2, 2, 2, 2]
    flat = torch.zeros(4, 3)  # a uniform draw: the run's own seeded generator decides it
    first, again = (TokenSampler(params, seq, 2, 3, None).draw(flat, 0)[0] for _ in range(2))
    assert torch.equal(first, again)


def test_text_tracker_never_streams_the_start_of_a_stop_string():
    tok = CharTokenizer(CHARS)
    tracker = TextTracker(tok, 1, ("\n\n",), 0, None, streaming=True)
    pieces = []
    for t, ch in enumerate("one\ntwo\n\nthree"):
        pieces += [piece for _, piece in tracker.push(tok.encode(ch), t)]
        if tracker.active == 0:
            break
    assert "".join(pieces) == tracker.texts[0] == "one\ntwo"
    assert tracker.reasons == ["stop"] and tracker.ntokens == [9]  # the token completing the stop is counted
    assert all(not piece.endswith("\n") for piece in pieces[:-1])  # a lone newline was held back first


# --- the loop, on stub models ----------------------------------------------------------------


def test_repetition_penalty_changes_what_is_generated():
    model, tok = ConstModel(), NumTok()
    plain = generate(model, tok, "7", SamplingParams(temperature=0, max_new_tokens=12))[0]
    assert plain.text == "0" * 12
    pen = generate(model, tok, "7", SamplingParams(temperature=0, max_new_tokens=12, repetition_penalty=2.0))[0]
    # 0 seen: 3/2 < 2.9 so 1 wins; then both seen: 1.5 > 1.45 so 0 again, and so on
    assert pen.text.startswith("01") and set(pen.text) == {"0", "1"}
    # a window of one token only remembers the last token: strict alternation
    short = generate(model, tok, "7", SamplingParams(temperature=0, max_new_tokens=8, repetition_penalty=2.0,
                                                   repetition_window=1))[0]
    assert short.text == "01010101"


def test_frequency_and_presence_penalties_in_the_loop():
    model, tok = ConstModel(), NumTok()
    pres = generate(model, tok, "7", SamplingParams(temperature=0, max_new_tokens=6, presence_penalty=1.0))[0]
    assert pres.text == "010000"  # 0 present: 2 < 2.9 -> 1; both present: 2 > 1.9 -> 0 from then on
    freq = generate(model, tok, "7", SamplingParams(temperature=0, max_new_tokens=20, frequency_penalty=0.5))[0]
    counts = [freq.text.count(c) for c in "01"]
    assert abs(counts[0] - counts[1]) <= 1 and set(freq.text) == {"0", "1"}  # kept in balance
    # the prompt does not count for the OpenAI-style penalties
    no_prompt_effect = generate(model, tok, "000", SamplingParams(temperature=0, max_new_tokens=1,
                                                                  presence_penalty=1.0))[0]
    assert no_prompt_effect.text == "0"


def test_stop_string_ends_the_text_before_it():
    tok = CharTokenizer(CHARS)
    model = ScriptModel(tok, "the raven\n\nflew away\n\nnever", prompt_len=2)
    g = generate(model, tok, "ab", SamplingParams(temperature=0, max_new_tokens=40, stop=("\n\n",)))[0]
    assert g.text == "the raven" and g.finish_reason == "stop"
    assert tok.decode(g.tokens) == "the raven\n\n"  # the token that completed the stop string is kept
    longest = generate(model, tok, "ab", SamplingParams(temperature=0, max_new_tokens=40, stop=("away", "\n\n")))[0]
    assert longest.text == "the raven"  # the earliest stop string wins
    none = generate(model, tok, "ab", SamplingParams(temperature=0, max_new_tokens=5, stop=("zzz",)))[0]
    assert none.text == "the r" and none.finish_reason == "length"


def test_min_new_tokens_ignores_an_early_stop_string():
    tok = CharTokenizer(CHARS)
    model = ScriptModel(tok, "ab\n\ncd\n\nef", prompt_len=1)
    early = generate(model, tok, "x", SamplingParams(temperature=0, max_new_tokens=20, stop=("\n\n",)))[0]
    assert early.text == "ab"
    late = generate(model, tok, "x", SamplingParams(temperature=0, max_new_tokens=20, stop=("\n\n",),
                                                    min_new_tokens=5))[0]
    assert late.text == "ab\n\ncd" and late.finish_reason == "stop" and len(late.tokens) >= 5
    exact = generate(model, tok, "x", SamplingParams(temperature=0, max_new_tokens=20, stop=("\n\n",),
                                                     min_new_tokens=4))[0]
    assert exact.text == "ab" and len(exact.tokens) == 4  # the 4th token completes the stop: allowed


def test_min_new_tokens_bans_end_of_text():
    class EotTok(CharTokenizer):
        eot_token = 0  # pretend the first character is an end-of-text token

    tok = EotTok(CHARS)
    eot_char = tok.chars[0]
    model = ScriptModel(tok, "ab" + eot_char + "cdefg", prompt_len=1, second=tok.encode("z")[0])
    g = generate(model, tok, "x", SamplingParams(temperature=0, max_new_tokens=10))[0]
    assert g.text == "ab" and g.finish_reason == "eot" and len(g.tokens) == 2
    g = generate(model, tok, "x", SamplingParams(temperature=0, max_new_tokens=10, min_new_tokens=4))[0]
    # banned at step 3, the end-of-text gives way to the runner-up; after step 4 the script runs out
    assert g.text.startswith("abzcdefg") and len(g.tokens) == 10 and g.finish_reason == "length"
    off = generate(model, tok, "x", SamplingParams(temperature=0, max_new_tokens=4, stop_at_eot=False))[0]
    assert len(off.tokens) == 4 and off.finish_reason == "length"


def test_num_samples_is_one_batch():
    tok = CharTokenizer(CHARS)
    model = ScriptModel(tok, "abcdefghij", prompt_len=3)
    gens = generate(model, tok, "xyz", SamplingParams(temperature=0, max_new_tokens=6, num_samples=4))
    assert [g.text for g in gens] == ["abcdef"] * 4
    # one prefill at batch 1 (the prompt is encoded once), then every step feeds all 4 rows at once
    assert model.calls == [1] + [4] * 5


def test_should_stop_aborts():
    tok = CharTokenizer(CHARS)
    model = ScriptModel(tok, "abcdefghijklmnop", prompt_len=1)
    polls = []

    def stop():
        polls.append(1)
        return len(polls) > 3

    gens = generate(model, tok, "x", SamplingParams(temperature=0, max_new_tokens=15, num_samples=2), should_stop=stop)
    assert all(g.finish_reason == "aborted" for g in gens)
    assert [g.text for g in gens] == ["abc", "abc"]
    assert generate(model, tok, "x", SamplingParams(max_new_tokens=5), should_stop=lambda: True)[0].tokens == []


def test_streaming_pieces_concatenate_to_the_text():
    tok = CharTokenizer(CHARS)
    model = ScriptModel(tok, "over the hill\n and far\n\naway", prompt_len=1)
    pieces = {0: [], 1: []}
    params = SamplingParams(temperature=0, max_new_tokens=40, stop=("\n\n",), num_samples=2)
    gens = generate(model, tok, "x", params, on_token=lambda i, p: pieces[i].append(p))
    assert gens[0].text == "over the hill\n and far"
    for i in (0, 1):
        assert "".join(pieces[i]) == gens[i].text
        assert len(pieces[i]) > 5  # streamed as it came, not at the end
    # the generator form: sample 0's pieces, and the generations as its return value
    it = stream(model, tok, "x", params)
    got = []
    while True:
        try:
            got.append(next(it))
        except StopIteration as done:
            result = done.value
            break
    assert "".join(got) == result[0].text == gens[0].text


def test_stream_can_be_abandoned_and_threads_are_restored():
    threads = torch.get_num_threads()
    model = tiny_model()
    it = stream(model, TOK, "the ", SamplingParams(max_new_tokens=30, seed=1))
    first = [next(it) for _ in range(3)]
    assert torch.get_num_threads() == threads  # the consumer never runs with the decode setting
    it.close()
    assert len("".join(first)) == 3 and torch.get_num_threads() == threads


# --- the loop, on real models ------------------------------------------------------------------


def test_same_seed_same_text_different_seed_different_text(tiny_run):
    from atomlib.model.checkpoint import load_run

    model, tok, _ = load_run(tiny_run, device="cpu")
    p = SamplingParams(temperature=1.0, max_new_tokens=60, num_samples=2, seed=7)
    a, b = generate(model, tok, "Upon the ", p), generate(model, tok, "Upon the ", p)
    assert [g.text for g in a] == [g.text for g in b] and [g.tokens for g in a] == [g.tokens for g in b]
    c = generate(model, tok, "Upon the ", p.replace(seed=8))
    assert [g.text for g in c] != [g.text for g in a]
    assert a[0].text != a[1].text  # the rows of a batch are different samples
    torch.manual_seed(0)
    r1 = torch.rand(1)
    generate(model, tok, "Upon the ", p)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), r1)  # the global RNG is left alone


def test_generation_record(tiny_run):
    from atomlib.model.checkpoint import load_run

    model, tok, _ = load_run(tiny_run, device="cpu")
    g = generate(model, tok, "Over many ", SamplingParams(max_new_tokens=25, seed=3, precision="float32"))[0]
    assert len(g.tokens) == len(g.logprobs) == 25 and g.finish_reason == "length"
    assert g.text == tok.decode(g.tokens)
    assert all(lp <= 0 for lp in g.logprobs)
    # the log-probabilities are the model's own, before temperature
    with torch.no_grad():
        ids = torch.tensor([tok.encode("Over many ") + g.tokens])
        logits, _ = model(ids, all_logits=True)
        ref = torch.log_softmax(logits[0, -26:-1], -1).gather(1, ids[0, -25:, None])[:, 0]
    assert torch.allclose(torch.tensor(g.logprobs), ref, atol=1e-4)


@pytest.mark.parametrize("bias", [False, True])
def test_greedy_cache_equals_no_cache(bias):
    # float32: the cache must not change a single token (bf16 is checked in test_kernels.py)
    model = tiny_model(block_size=64, bias=bias)
    p = SamplingParams(temperature=0, max_new_tokens=40, precision="float32")
    cached = generate(model, TOK, "the night ", p)[0]
    for window in ("slide", "crop"):  # within the block both windows are the whole context
        assert generate_nocache(model, TOK, "the night ", p, window=window)[0].tokens == cached.tokens


def test_sampled_cache_equals_no_cache_under_a_seed():
    model = tiny_model(block_size=64)
    p = SamplingParams(temperature=1.0, top_k=20, top_p=0.95, repetition_penalty=1.3, max_new_tokens=50,
                       num_samples=3, seed=11, precision="float32")
    cached = generate(model, TOK, "fire ", p)
    ref = generate_nocache(model, TOK, "fire ", p, window="slide")
    assert [g.tokens for g in cached] == [g.tokens for g in ref]


def test_sliding_window_beyond_block_size():
    model = tiny_model(block_size=16, n_embd=32)
    prompt = "and the raven "  # 14 tokens: the window slides after 2 new ones
    p = SamplingParams(temperature=0, max_new_tokens=70, precision="float32")
    cached = generate(model, TOK, prompt, p)[0]
    assert len(cached.tokens) == 70
    # slide: when the window is full, keep its last half and go on (the cached loop's rule)
    assert generate_nocache(model, TOK, prompt, p, window="slide")[0].tokens == cached.tokens
    # keeping the whole block at every slide is nanoGPT's crop: same tokens as the crop reference
    full = generate(model, TOK, prompt, p.replace(window_keep=16))[0]
    assert full.tokens == generate_nocache(model, TOK, prompt, p, window="crop")[0].tokens
    # a prompt longer than the block is cut to its last block_size tokens
    long_prompt = "upon the midnight dreary while i pondered "
    a = generate(model, TOK, long_prompt, p.replace(max_new_tokens=20))[0]
    b = generate_nocache(model, TOK, long_prompt[-16:], p.replace(max_new_tokens=20), window="slide")[0]
    assert a.tokens == b.tokens


def test_every_generation_step_is_the_models_own_forward(monkeypatch):
    """One model path: the decode loop calls GPT.forward with the cache, once for the prompt and
    once a step, in every precision; nothing else computes logits."""
    from atomlib.model.gpt import GPT

    model = tiny_model(block_size=32)
    calls = []
    real = GPT.forward

    def spy(self, idx, targets=None, cache=None, all_logits=False):
        calls.append((idx.shape[1], cache is not None))
        return real(self, idx, targets, cache, all_logits)

    monkeypatch.setattr(GPT, "forward", spy)
    for precision in ("float32", "bfloat16"):
        calls.clear()
        g = generate(model, TOK, "the ", SamplingParams(temperature=0, max_new_tokens=12, precision=precision))[0]
        assert len(g.tokens) == 12
        assert calls == [(4, True)] + [(1, True)] * 11


def test_gpt2_bpe_streams_whole_characters():
    from atomlib.paths import tokenizer_mirror
    from atomlib.data.tokenizer import GPT2Tokenizer

    if tokenizer_mirror() is None:
        pytest.skip("no offline GPT-2 BPE files")
    tok = GPT2Tokenizer()
    model = tiny_model(block_size=32, n_layer=1, n_embd=16, vocab=tok.vocab_size)
    pieces = []
    g = generate(model, tok, "The raven", SamplingParams(max_new_tokens=20, seed=2, stop_at_eot=False),
                 on_token=lambda i, p: pieces.append(p))[0]
    assert "".join(pieces) == g.text and len(g.tokens) == 20
    if "\ufffd" not in tok.decode(g.tokens):
        assert g.text == tok.decode(g.tokens)


# --- atom sample ---------------------------------------------------------------------------------


def run_cli(capsys, *args):
    from atomlib.cli import main

    code = main(["sample", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_samples_a_run(tiny_run, capsys):
    code, out, err = run_cli(capsys, "--run", tiny_run, "--max-new-tokens", 30, "--seed", 1)
    assert code == 0 and out.startswith("\n") and len(out) >= 30
    code, again, _ = run_cli(capsys, "--run", tiny_run, "--max-new-tokens", 30, "--seed", 1)
    assert again == out  # seeded: the same sample
    code, out, _ = run_cli(capsys, "--run", tiny_run, "--prompt", "Upon the", "--num-samples", 3,
                           "--max-new-tokens", 10, "--temperature", 0.9, "--top-k", 5, "--top-p", 0.9,
                           "--repetition-penalty", 1.2, "--seed", 2)
    assert code == 0 and out.count("---------------") == 3 and out.count("Upon the") == 3
    code, out, _ = run_cli(capsys, "--run", tiny_run, "--prompt", "Upon", "--max-new-tokens", 300, "--seed", 4,
                           "--stop", "e", "--stop", "a", "--min-new-tokens", 3)
    body = out[len("Upon"):].rstrip("\n")
    assert code == 0 and len(body) >= 2 and "e" not in body[2:] and "a" not in body[2:] and len(body) < 300


def test_cli_prompt_from_a_file(tiny_run, tmp_path, capsys):
    f = tmp_path / "prompt.txt"
    f.write_text("Deep into that ", encoding="utf-8")
    code, out, _ = run_cli(capsys, "--run", tiny_run, "--prompt", f"FILE:{f}", "--max-new-tokens", 5, "--seed", 1)
    assert code == 0 and out.startswith("Deep into that ")
    code, out, err = run_cli(capsys, "--run", tiny_run, "--prompt", f"FILE:{tmp_path / 'nope.txt'}")
    assert code == 2 and "nope.txt" in err and len(err.strip().splitlines()) == 1


def test_cli_bad_value_is_one_line(tiny_run, capsys):
    code, out, err = run_cli(capsys, "--run", tiny_run, "--top-p", 3)
    assert code == 2 and "top_p" in err and len(err.strip().splitlines()) == 1


def _one_line_error(err, name):
    lines = err.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("atom sample: error:") and name in lines[0]


def test_cli_missing_empty_and_corrupt_runs(tiny_run, tmp_path, capsys):
    code, _, err = run_cli(capsys, "--run", tmp_path / "missing")
    assert code == 2 and _one_line_error(err, "missing")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "--run", tmp_path / "empty")
    assert code == 2 and _one_line_error(err, "state.json")
    bad_state = tmp_path / "bad_state"
    shutil.copytree(tiny_run, bad_state)
    (bad_state / "state.json").write_text("{not json", encoding="utf-8")
    code, _, err = run_cli(capsys, "--run", bad_state)
    assert code == 2 and _one_line_error(err, "state.json")
    bad_model = tmp_path / "bad_model"
    shutil.copytree(tiny_run, bad_model)
    (bad_model / "model.safetensors").write_bytes(b"\x00" * 50)
    code, _, err = run_cli(capsys, "--run", bad_model)
    assert code == 2 and _one_line_error(err, "model.safetensors")


def test_cli_uses_the_newest_run_or_says_there_is_none(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ATOM_HOME", str(tmp_path))
    code, _, err = run_cli(capsys, "--max-new-tokens", 5)
    assert code == 2 and _one_line_error(err, "no trained run under")
    shutil.copytree(tiny_run, tmp_path / "outputs" / "runs" / "tiny")
    code, out, err = run_cli(capsys, "--max-new-tokens", 5, "--seed", 1)
    assert code == 0 and "tiny" in err and len(out) >= 5


def test_cli_from_a_local_gpt2_folder(tmp_path, capsys, monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    from atomlib.paths import tokenizer_mirror

    mirror = tokenizer_mirror()
    if mirror is None:
        pytest.skip("no offline GPT-2 BPE files")
    monkeypatch.setenv("ATOM_TOKENIZER_MIRROR", str(mirror))
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_positions=64, n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path / "hf")
    code, out, err = run_cli(capsys, "--init-from", tmp_path / "hf", "--prompt", "The raven", "--max-new-tokens", 8,
                             "--seed", 1)
    assert code == 0 and out.startswith("The raven"), err
    code, _, err = run_cli(capsys, "--init-from", tmp_path / "nothing-here")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_atom_sample_console_script(tiny_run):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ok = subprocess.run(atom_cmd("sample", "--run", tiny_run, "--max-new-tokens", 12, "--seed", 3,
                                 "--prompt", "Upon the"), capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("Upon the"), ok.stderr
    bad = subprocess.run(atom_cmd("sample", "--run", tiny_run.parent / "no-such-run"), capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "no-such-run" in bad.stderr


def test_a_training_model_is_sampled_without_dropout_and_left_training():
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=TOK.vocab_size, n_layer=2, n_head=2, n_embd=32, dropout=0.5))
    model.train()
    p = SamplingParams(temperature=0, max_new_tokens=15)
    a = generate(model, TOK, "the ", p)[0].tokens
    assert model.training
    assert generate(model.eval(), TOK, "the ", p)[0].tokens == a
