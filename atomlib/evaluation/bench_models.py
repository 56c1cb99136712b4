"""The bench's two models: ATOM-GPT and Hugging Face GPT-2 with one shape and one set of weights.

A random GPT2LMHeadModel is saved to a temporary folder and ATOM-GPT loads it with
GPT.from_pretrained, so both hold the same numbers; `same_weights_check` proves it on their
logits before anything is timed, and `next_token_kl` says what decoding in a lower precision
costs in fidelity. The shape is a training config's, with the vocabulary of its char dataset.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field

import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

from atomlib import device as D
from atomlib.config import load_config
from atomlib.data.prepare import load_meta, resolve_dataset
from atomlib.errors import AtomError
from atomlib.model.gpt import GPT
from atomlib.model.kernels import bf16_weights

DEFAULT_VOCAB = 96  # printable ASCII and a newline: about what a char corpus of English verse has


@dataclass
class BenchShape:
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int  # training sequence length
    vocab_size: int
    batch_size: int = 8
    prompt_tokens: int = 16
    new_tokens: int = 500
    gen_batch: int = 8
    chars: list = field(default_factory=list, repr=False)
    vocab_note: str = ""

    @property
    def positions(self) -> int:
        """The position table: HF cannot run past it, so it covers prompt + every new token."""
        return max(self.block_size, self.prompt_tokens + self.new_tokens)


def bench_shape(config: str = "test", tiny: bool = False) -> BenchShape:
    """The model shape of a training config, with the vocabulary of its char dataset."""
    cfg = load_config(config)
    chars, note = _vocabulary(cfg.dataset)
    if tiny:
        return BenchShape(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=len(chars), batch_size=2,
                          prompt_tokens=8, new_tokens=24, gen_batch=2, chars=chars, vocab_note=note)
    return BenchShape(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size,
                      vocab_size=len(chars), chars=chars, vocab_note=note)


def _vocabulary(dataset: str) -> tuple[list[str], str]:
    try:
        meta = load_meta(resolve_dataset(dataset))
    except AtomError:
        meta = {}
    if meta.get("tokenizer") == "char" and meta.get("chars"):
        return list(meta["chars"]), f"vocabulary of dataset '{dataset}' ({len(meta['chars'])} characters)"
    chars = ["\n"] + [chr(i) for i in range(32, 127)]
    return chars, (f"dataset '{dataset}' has no char meta.json here, so the vocabulary is {DEFAULT_VOCAB} "
                   "characters (printable ASCII and a newline)")


def build_models(shape: BenchShape, seed: int = 1337):
    """(ATOM GPT, HF GPT2LMHeadModel) with the same shape and the same weights, float32, dropout 0."""
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # "Loading weights" bars of a temporary folder are noise here
    torch.manual_seed(seed)
    hc = GPT2Config(vocab_size=shape.vocab_size, n_positions=shape.positions, n_embd=shape.n_embd,
                    n_layer=shape.n_layer, n_head=shape.n_head, activation_function="gelu_new",
                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    hf = GPT2LMHeadModel(hc)
    with tempfile.TemporaryDirectory(prefix="atom-bench-") as tmp:
        hf.save_pretrained(tmp)
        atom = GPT.from_pretrained(tmp)
    return atom, hf


def hf_attention(hf) -> str | None:
    """The attention implementation HF's model runs, as its config records it (a private field that
    transformers has no public getter for; None where a version lacks it: a label, nothing more)."""
    return getattr(hf.config, "_attn_implementation", None)


@torch.no_grad()
def same_weights_check(atom, hf, shape: BenchShape, device) -> dict:
    """Largest |logit difference| of the two models on one random batch (float32, eval mode)."""
    atom.eval(), hf.eval()
    idx = torch.randint(0, shape.vocab_size, (2, min(shape.block_size, 64)), device=device)
    ours = atom(idx, all_logits=True)[0]
    theirs = hf(idx).logits
    diff = (ours - theirs).abs().max().item()
    return {"max_abs_logit_diff": diff, "ok": diff < 1e-3}


@torch.no_grad()
def next_token_kl(atom, shape: BenchShape, device, dtype, steps: int = 20) -> float | None:
    """The largest KL(float32 model || the model decoding in dtype) of the next-token distribution
    over a prefill and `steps` one-token steps: what generating in dtype costs in fidelity."""
    if dtype == torch.float32:
        return None
    model = copy.deepcopy(atom).to(device).eval()
    g = torch.Generator().manual_seed(0)
    n = min(shape.positions, shape.prompt_tokens + steps)
    idx = torch.randint(0, shape.vocab_size, (2, n), generator=g).to(device)
    want = torch.log_softmax(model(idx, all_logits=True)[0].float(), -1)
    cache, first = model.new_cache(2), n - steps
    with torch.inference_mode(), D.autocast(device, dtype), bf16_weights({}):
        got = [model(idx[:, :first], cache=cache)[0]]
        got += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(first, n)]
    kl = 0.0
    for t, logits in zip(range(first - 1, n), got):
        p, q = want[:, t], torch.log_softmax(logits[:, -1].float(), -1)
        kl = max(kl, float((p.exp() * (p - q)).sum(-1).max()))
    return kl
