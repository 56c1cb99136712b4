"""How the bench times: contestants warmed up, then timed in alternating rounds, medians compared.

The machines this runs on are shared and noisy, so no figure is compared across runs: every
contestant of one comparison runs in the same rounds, each round in a rotated order (so no one
always runs right after the same neighbour), and a ratio divides two medians of the same run.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from atomlib import device as D


def say(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(msg, file=sys.stderr, flush=True)


def silent(msg: str) -> None:
    """No progress (run_bench(quiet=True))."""


@dataclass
class Contestant:
    key: str
    label: str
    run: object  # callable doing one unit of work; may return the seconds to count (else: its wall time)
    tokens: int  # tokens one unit processes or produces
    rounds: int  # at most this many timed rounds
    warmup: int = 1
    warm: object = None  # a cheaper callable for the warm-up (default: run)
    settings: dict = field(default_factory=dict)
    seconds: list = field(default_factory=list)

    def rates(self) -> list[float]:
        return [self.tokens / s for s in self.seconds]


def time_rounds(contestants: list[Contestant], device, budget_s: float | None, progress: str,
                report: Callable[[str], None] = say) -> float:
    """Warm every contestant up, then time them in alternating rounds (each round in a rotated
    order). Stops adding rounds once the budget is spent: after two rounds, or after one if it
    took twice the budget (a machine that busy gives noise anyway). Returns the wall time taken."""
    t_start = time.perf_counter()
    for c in contestants:
        for _ in range(c.warmup):
            (c.warm or c.run)()
        D.synchronize(device)
    rounds = max(c.rounds for c in contestants)
    for r in range(rounds):
        order = contestants[r % len(contestants):] + contestants[:r % len(contestants)]
        for c in order:
            if len(c.seconds) < c.rounds:
                c.seconds.append(_timed(c, device))
        report(f"{progress}: round {r + 1}/{rounds} done ({time.perf_counter() - t_start:.0f} s)")
        spent = time.perf_counter() - t_start
        if budget_s is not None and (spent > budget_s and r >= 1 or spent > 2 * budget_s):
            break
    return time.perf_counter() - t_start


def _timed(c: Contestant, device) -> float:
    """Seconds of one unit of c's work: what its run returns, else its wall time."""
    D.synchronize(device)
    t0 = time.perf_counter()
    took = c.run()
    D.synchronize(device)
    return took if isinstance(took, float) else time.perf_counter() - t0


def summary(c: Contestant) -> dict:
    rates = c.rates()
    return {"label": c.label, "tokens_per_s": statistics.median(rates), "best_tokens_per_s": max(rates),
            "rounds": len(rates), "tokens_per_s_rounds": [round(x, 1) for x in rates],
            "seconds_per_unit": statistics.median(c.seconds), "tokens_per_unit": c.tokens, **c.settings}


def measured_peaks(dev, emulated: bool) -> dict:
    """Matrix-multiply FLOP/s in float32 and bfloat16, measured now (MFU's denominators)."""
    peaks = {"float32": D.measure_peak_flops(dev, torch.float32, seconds=0.4)}
    # an emulated bf16 product is slow enough that a small one tells the (low) peak
    peaks["bfloat16"] = D.measure_peak_flops(dev, torch.bfloat16, n=512 if emulated else 1024, seconds=0.4)
    return peaks


def best_peaks(peaks: dict, dev, emulated: bool) -> dict:
    """The higher of each earlier peak and one measured now: a busy moment must not pass for the machine's peak."""
    now = measured_peaks(dev, emulated)
    return {k: max(v, now[k]) for k, v in peaks.items()}
