"""`atom bench --serve`: what continuous batching buys, measured through the HTTP API.

The run is served by `atom serve` in a process of its own on 127.0.0.1, as a user runs it, and
read as a client would, streaming over HTTP from this process (a client in the server's own
process would hold the server's interpreter lock while it parses). Each round times one stream
alone, then `streams` streams at once. Every stream gets exactly `max_tokens` tokens (min_tokens
= max_tokens, no stop strings, no filters), so no stream ends early and leaves the others a
smaller batch: the rounds compare like with like. Reported, as medians over rounds of the same
run (the machine is shared and noisy):

    tokens/s      aggregate: completion tokens of every stream / wall time, alone and under load
    ratio         aggregate tokens/s under load / alone (the issue's target: >= 4 with 8 streams)
    TTFT          time to the first streamed token, p50 and p95, alone and under load
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from atomlib.device import cpu_model_name
from atomlib.errors import AtomError
from atomlib.paths import free_port, resolve_run

PROMPT = "By the river of blood"
START_TIMEOUT = 120.0  # seconds for the server to load the run and answer /health


def _one_stream(url: str, model_id: str, max_tokens: int, seed: int) -> tuple[float, int]:
    """(seconds to the first token, completion tokens) of one streamed request."""
    body = {"model": model_id, "prompt": PROMPT, "max_tokens": max_tokens, "min_tokens": max_tokens, "seed": seed,
            "stream": True, "stream_options": {"include_usage": True}, "stop": [], "filters": False,
            "kind": "thematic"}
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


@contextlib.contextmanager
def served_process(run, device: str, max_tokens: int, max_rows: int, stream_interval: float | None):
    """`atom serve` on a free port of 127.0.0.1 in a child process; yields its URL once /health
    answers, stops it after. A server that fails to start is named with its last line."""
    port = free_port()
    cmd = [sys.executable, "-m", "atomlib.cli", "serve", "--run", str(run),
           "--port", str(port), "--device", device, "--max-tokens", str(max_tokens), "--max-rows", str(max_rows)]
    if stream_interval is not None:
        cmd += ["--stream-interval", str(stream_interval)]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for(url, proc, log)
            yield url
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            proc.kill()  # (nothing, once it has exited)
            proc.wait()


def _wait_for(url: str, proc: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            lines = [line for line in log.read().splitlines() if line.strip()] or ["(no output)"]
            raise AtomError(f"the server for the benchmark exited with status {proc.returncode}: {lines[-1]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/health", timeout=1).ok:
                return
        time.sleep(0.1)
    raise AtomError(f"the server for the benchmark did not answer {url}/health within {START_TIMEOUT:.0f} s.")


def serve_bench(run=None, streams: int = 8, max_tokens: int = 128, rounds: int = 5, device: str = "auto",
                stream_interval: float | None = None) -> dict:
    """Serve the run and time one stream against `streams` concurrent ones (see the module
    docstring); stream_interval None is the server's default."""
    run = resolve_run(run)
    model_id = run.name
    with served_process(run, device, max_tokens, max(16, streams), stream_interval) as url:
        _round(url, model_id, 2, 8, 0)  # warm-up
        alone, load = [], []
        for r in range(rounds):
            alone.append(_round(url, model_id, 1, max_tokens, 1000 * r))
            load.append(_round(url, model_id, streams, max_tokens, 1000 * r + 1))
    one = statistics.median(x["tokens_per_s"] for x in alone)
    many = statistics.median(x["tokens_per_s"] for x in load)
    ttft_one = [t for x in alone for t in x["ttft"]]
    ttft_many = [t for x in load for t in x["ttft"]]
    return {"run": model_id, "cpu": cpu_model_name(), "streams": streams, "max_tokens": max_tokens, "rounds": rounds,
            "stream_interval": stream_interval, "tokens_per_s_alone": one, "tokens_per_s_load": many,
            "ratio": many / one, "ratios": [b["tokens_per_s"] / a["tokens_per_s"] for a, b in zip(alone, load)],
            "ttft_alone_p50": _percentile(ttft_one, 0.5), "ttft_alone_p95": _percentile(ttft_one, 0.95),
            "ttft_load_p50": _percentile(ttft_many, 0.5), "ttft_load_p95": _percentile(ttft_many, 0.95),
            "target_ratio_met": many / one >= streams / 2}


def format_serve(r: dict) -> str:
    interval = "the server's default" if r["stream_interval"] is None else f"{r['stream_interval']:g} s"
    lines = [f"serve: run {r['run']} on {r['cpu']}, {r['max_tokens']} tokens a stream, stream interval "
             f"{interval}, median of {r['rounds']} rounds",
             f"  {'':<22}{'tokens/s':>10}{'TTFT p50':>10}{'TTFT p95':>10}",
             f"  {'1 stream':<22}{r['tokens_per_s_alone']:>10.1f}{r['ttft_alone_p50'] * 1e3:>8.0f}ms"
             f"{r['ttft_alone_p95'] * 1e3:>8.0f}ms",
             f"  {str(r['streams']) + ' concurrent streams':<22}{r['tokens_per_s_load']:>10.1f}"
             f"{r['ttft_load_p50'] * 1e3:>8.0f}ms{r['ttft_load_p95'] * 1e3:>8.0f}ms",
             f"  aggregate ratio {r['ratio']:.2f}x (rounds: {' '.join(f'{x:.2f}' for x in r['ratios'])}; "
             f"target >= {r['streams'] / 2:g}x: {'met' if r['target_ratio_met'] else 'not met'})"]
    return "\n".join(lines)
