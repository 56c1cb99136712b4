"""`atom bench --serve`: what continuous batching buys, measured through the HTTP API.

The run is served on 127.0.0.1 (apps.serve, in a thread) and read as a client would, streaming
over HTTP. Each round times one stream alone, then `streams` streams at once; every stream asks
for exactly `max_tokens` tokens (no stop strings, no filters), so the figures compare like with
like. Reported, as medians over rounds of the same run (the machine is shared and noisy):

    tokens/s      aggregate: completion tokens of every stream / wall time, alone and under load
    ratio         aggregate tokens/s under load / alone (the issue's target: >= 4 with 8 streams)
    TTFT          time to the first streamed token, p50 and p95, alone and under load
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from atomlib.apps.serve import Background, Limits, open_run

PROMPT = "By the river of blood"


def _one_stream(url: str, model_id: str, max_tokens: int, seed: int) -> tuple[float, int]:
    """(seconds to the first token, completion tokens) of one streamed request."""
    body = {"model": model_id, "prompt": PROMPT, "max_tokens": max_tokens, "seed": seed, "stream": True,
            "stream_options": {"include_usage": True}, "stop": [], "filters": False, "kind": "thematic"}
    t0, first, tokens = time.perf_counter(), None, 0
    with requests.post(url + "/v1/completions", json=body, stream=True, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            event = json.loads(line[6:])
            if first is None and any(c.get("text") for c in event.get("choices", [])):
                first = time.perf_counter() - t0
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    return (first if first is not None else time.perf_counter() - t0), tokens


def _round(url: str, model_id: str, streams: int, max_tokens: int, seed: int) -> dict:
    with ThreadPoolExecutor(streams) as pool:
        t0 = time.perf_counter()
        results = list(pool.map(lambda i: _one_stream(url, model_id, max_tokens, seed + i), range(streams)))
        wall = time.perf_counter() - t0
    return {"tokens_per_s": sum(n for _, n in results) / wall, "ttft": [t for t, _ in results],
            "tokens": sum(n for _, n in results)}


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def serve_bench(run=None, streams: int = 8, max_tokens: int = 128, rounds: int = 3, device: str = "auto") -> dict:
    """Serve the run and time one stream against `streams` concurrent ones (see the module docstring)."""
    served = open_run(run, device, Limits(max_tokens=max_tokens, max_rows=max(16, streams)))
    server = Background(served)
    try:
        _round(server.url, served.model_id, 2, 8, 0)  # warm-up
        alone, load = [], []
        for r in range(rounds):
            alone.append(_round(server.url, served.model_id, 1, max_tokens, 1000 * r))
            load.append(_round(server.url, served.model_id, streams, max_tokens, 1000 * r + 1))
    finally:
        server.stop()
    one = statistics.median(x["tokens_per_s"] for x in alone)
    many = statistics.median(x["tokens_per_s"] for x in load)
    ttft_one = [t for x in alone for t in x["ttft"]]
    ttft_many = [t for x in load for t in x["ttft"]]
    return {"run": served.model_id, "streams": streams, "max_tokens": max_tokens, "rounds": rounds,
            "tokens_per_s_alone": one, "tokens_per_s_load": many, "ratio": many / one,
            "ttft_alone_p50": _percentile(ttft_one, 0.5), "ttft_alone_p95": _percentile(ttft_one, 0.95),
            "ttft_load_p50": _percentile(ttft_many, 0.5), "ttft_load_p95": _percentile(ttft_many, 0.95),
            "target_ratio_met": many / one >= streams / 2}


def format_serve(r: dict) -> str:
    lines = [f"serve: run {r['run']}, {r['max_tokens']} tokens a stream, median of {r['rounds']} rounds",
             f"  {'':<22}{'tokens/s':>10}{'TTFT p50':>10}{'TTFT p95':>10}",
             f"  {'1 stream':<22}{r['tokens_per_s_alone']:>10.1f}{r['ttft_alone_p50'] * 1e3:>8.0f}ms"
             f"{r['ttft_alone_p95'] * 1e3:>8.0f}ms",
             f"  {str(r['streams']) + ' concurrent streams':<22}{r['tokens_per_s_load']:>10.1f}"
             f"{r['ttft_load_p50'] * 1e3:>8.0f}ms{r['ttft_load_p95'] * 1e3:>8.0f}ms",
             f"  aggregate ratio {r['ratio']:.2f}x (target >= {r['streams'] / 2:g}x: "
             f"{'met' if r['target_ratio_met'] else 'not met'})"]
    return "\n".join(lines)
