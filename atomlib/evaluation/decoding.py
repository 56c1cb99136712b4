"""What the decoding choices do, measured on a prompt and returned as table rows (notebook 05).

    sample_rows        each sample of a batch: its text, length, why it ended, its mean log-prob
    temperature_sweep  one prompt and seed at several temperatures: diversity against typicality
    kind_answers       prompts of each kind through the answer pipeline (classify, preset, filter)
    cache_speed        tokens per second with the KV cache, without it, and for a batch

Each function is a few calls into generation; the rows go straight into a DataFrame. `atom bench`
makes the careful speed comparison; cache_speed is the quick look on this machine.
"""

from __future__ import annotations

import time
from typing import Sequence

from atomlib.evaluation.metrics import distinct_n
from atomlib.generation.answer import Settings, answer
from atomlib.generation.engine import Generation, generate, generate_nocache
from atomlib.generation.sampling import SamplingParams

TEMPERATURES = (0.0, 0.5, 0.8, 1.0, 1.3)


def sample_rows(prompt: str, gens: Sequence[Generation]) -> list[dict]:
    """One row per sample: the text (prompt included), tokens drawn, why it ended, its mean
    log-probability under the model."""
    return [{"sample": i + 1, "text": prompt + g.text, "tokens": len(g.tokens), "ended by": g.finish_reason,
             "mean log-prob": g.mean_logprob} for i, g in enumerate(gens)]


def temperature_sweep(model, tokenizer, prompt: str, params: SamplingParams,
                      temperatures: Sequence[float] = TEMPERATURES, chars: int = 400) -> list[dict]:
    """The same prompt and seed at each temperature (one sample each): the text (cut to `chars`),
    its distinct-2 (distinct word pairs / pairs; low = repetitive) and its mean log-probability
    under the model at temperature 1 (how typical the text is for the model)."""
    rows = []
    for t in temperatures:
        g = generate(model, tokenizer, prompt, params.replace(temperature=t, num_samples=1))[0]
        rows.append({"temperature": t, "text": (prompt + g.text)[:chars], "distinct-2": distinct_n(g.text, 2),
                     "mean log-prob": g.mean_logprob})
    return rows


def kind_answers(model, tokenizer, prompts: Sequence[str], seed: int | None = None,
                 max_new_tokens: int | None = None) -> list[dict]:
    """Each prompt answered by the one answer pipeline with its own kind's preset: the kind, the
    preset's temperature, the filtered answer, why sampling ended and whether the filters passed it."""
    rows = []
    for p in prompts:
        ans = answer(model, tokenizer, p, Settings(seed=seed, max_new_tokens=max_new_tokens))
        best = ans.choices[0]
        rows.append({"prompt": p, "kind": ans.kind, "temperature": ans.params.temperature, "answer (filtered)": ans.text,
                     "ended by": best.finish_reason, "passed": best.filter.passed})
    return rows


def _tokens_per_second(decode, model, tokenizer, prompt: str, params: SamplingParams) -> float:
    decode(model, tokenizer, prompt, params.replace(max_new_tokens=5, min_new_tokens=0))  # warm up
    t0 = time.perf_counter()
    gens = decode(model, tokenizer, prompt, params)
    return sum(len(g.tokens) for g in gens) / (time.perf_counter() - t0)


def cache_speed(model, tokenizer, prompt: str, n_tokens: int = 300, batch: int = 1, seed: int | None = None) -> list[dict]:
    """Decoding speed of n_tokens (end-of-text banned, so every run draws them all): with the KV
    cache, without it (the whole window encoded again for every token, as nanoGPT's sample.py
    does) and, when batch > 1, a batch of samples with the cache; each with its speed-up over
    no cache."""
    params = SamplingParams(temperature=1.0, max_new_tokens=n_tokens, min_new_tokens=n_tokens, seed=seed)
    rates = {"KV cache": _tokens_per_second(generate, model, tokenizer, prompt, params),
             "no cache": _tokens_per_second(generate_nocache, model, tokenizer, prompt, params)}
    if batch > 1:
        rates[f"KV cache, batch of {batch}"] = _tokens_per_second(generate, model, tokenizer, prompt,
                                                                  params.replace(num_samples=batch))
    return [{"decoding": name, "tokens/s": round(rate), "speed-up": round(rate / rates["no cache"], 1)}
            for name, rate in rates.items()]
