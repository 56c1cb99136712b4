"""Devices and precision, chosen from what the hardware really has.

`auto` picks CUDA, then MPS, then CPU. Precision `auto` picks bf16 autocast only where it
is fast: CUDA GPUs that support bf16 (fp16 with a grad scaler on older ones), and CPUs with
bf16 instructions whose bf16 matrix product beats float32 in a short probe. CPUs that only
emulate bf16 (AVX2) run a bf16 training step many times slower than float32, so there the answer
is float32. CPUs come in three kinds, and the benchmark's targets depend on which:

- emulated bf16 (no bf16 flags): float32;
- native bf16 dot products (AVX512-BF16, ARM BF16): bf16 beats float32 in the probe, so bf16;
- bf16 matrix units (Intel AMX): bf16 beats float32 by far more, so bf16 (cpu_has_bf16_units()).

Nothing is assumed from the CPU's name: the flags are read and the probe is timed, once per process.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import statistics
import time

import torch

from atomlib.errors import AtomError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(pref: str = "auto") -> torch.device:
    """'auto' -> cuda, else mps, else cpu; an explicit device is checked to exist."""
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(pref)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AtomError(f"device '{pref}' was asked for but CUDA is not available here; use device=auto or device=cpu.")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise AtomError(f"device '{pref}' was asked for but MPS is not available here; use device=auto or device=cpu.")
    return dev


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags in /proc/cpuinfo text: x86's "flags" line or ARM's "Features" line."""
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")) and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return parse_cpu_flags(f.read())
    except OSError:
        return frozenset()


# Flags of CPUs with bf16 matrix instructions: Intel AMX tiles, AVX512-BF16 (Cooper Lake, Sapphire
# Rapids, AMD Zen 4+), ARMv8.6 BF16 (Graviton 3, Neoverse V1+). Without them bf16 is emulated.
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
ARM_BF16_FLAGS = frozenset({"bf16"})
BF16_MIN_SPEEDUP = 1.5  # a bf16 matmul must beat float32 by this much for bf16 to be the fast path
BF16_UNITS_SPEEDUP = 4.0  # between what dot-product instructions (AVX512-BF16) and matrix units (AMX) reach


def cpu_bf16_flags() -> list[str]:
    """The bf16 matrix-instruction flags this CPU reports (empty: bf16 would be emulated)."""
    flags = cpu_flags()
    found = flags & BF16_FLAGS
    if platform.machine().lower() in ("arm64", "aarch64"):
        found |= flags & ARM_BF16_FLAGS
    return sorted(found)


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup(n: int = 512, budget_s: float = 0.3) -> float:
    """Measured speed of a bf16 matrix product relative to float32 on this CPU.

    One thread, timings alternating between the two dtypes, the best of each counting: a burst
    of load from other processes on a shared machine then cannot favour one side (the ratio
    per core is the ratio of the whole CPU). A clear answer (emulated: < 0.5x; units: > 2x)
    comes after a few tries; a borderline one keeps sampling until the time budget is spent.
    """
    g = torch.Generator().manual_seed(0)  # its own: a probe must not move the global random stream
    a32, b32 = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    a16, b16 = a32.bfloat16(), b32.bfloat16()

    def seconds(a, b):
        t0 = time.perf_counter()
        a @ b
        return time.perf_counter() - t0

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seconds(a32, b32), seconds(a16, b16)  # warm up: kernel selection, caches
        best32, best16 = float("inf"), float("inf")
        deadline = time.perf_counter() + budget_s
        for i in range(30):
            best32 = min(best32, seconds(a32, b32))
            best16 = min(best16, seconds(a16, b16))
            clear = i >= 4 and not 0.5 < best32 / best16 < 2.0
            if clear or time.perf_counter() > deadline:
                break
    finally:
        torch.set_num_threads(threads)
    return best32 / best16


def cpu_bf16_is_fast() -> bool:
    """True when this CPU has bf16 instructions (AMX, AVX512-BF16, ARM BF16) AND a short probe
    confirms that a bf16 product beats float32 by BF16_MIN_SPEEDUP; False where bf16 would be
    emulated (AVX2-only CPUs, where a bf16 training step is many times slower than float32).
    The flags gate the probe, so emulating machines never even time it. Cached per process."""
    if os.environ.get("ATOM_CPU_BF16") in ("0", "1"):  # escape hatch for experiments
        return os.environ["ATOM_CPU_BF16"] == "1"
    return bool(cpu_bf16_flags()) and cpu_bf16_speedup() >= BF16_MIN_SPEEDUP


def cpu_has_bf16_units() -> bool:
    """True for bf16 matrix units (AMX class): bf16 is fast here and the probe measures it at
    BF16_UNITS_SPEEDUP x float32 or more. Dot-product instructions (AVX512-BF16) make bf16 the
    faster dtype, but not by as much as matrix units; the benchmark's targets tell the two apart."""
    return cpu_bf16_is_fast() and bool(cpu_bf16_flags()) and cpu_bf16_speedup() >= BF16_UNITS_SPEEDUP


def cpu_report() -> dict:
    """What the precision choice on this CPU rests on, for logs and benchmark files."""
    flags = cpu_bf16_flags()
    return {"model": cpu_model_name(), "bf16_flags": flags,
            "bf16_matmul_speedup": round(cpu_bf16_speedup(), 2) if flags else None,
            "bf16_fast": cpu_bf16_is_fast(), "bf16_units": cpu_has_bf16_units()}


@functools.lru_cache(maxsize=1)
def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model")) and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pick_dtype(device: torch.device, pref: str = "auto") -> torch.dtype:
    """The compute precision for autocast: bf16 / fp16 where the device does it fast, else float32."""
    if pref != "auto":
        return DTYPES[pref]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_bf16_is_fast() else torch.float32
    return torch.float32  # MPS: float32 is the safe default


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed-precision context for forward passes (a no-op for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure_peak_flops(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 1024, seconds: float = 0.5) -> float:
    """The machine's achievable matrix-multiply FLOP/s in this dtype, measured now (for MFU)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    synchronize(device)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        synchronize(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
    return best


def describe(device: torch.device, dtype: torch.dtype) -> str:
    return f"{device.type} {str(dtype).replace('torch.', '')}"


class ThreadChoice:
    """Chooses torch's intra-op thread count on a CPU by timing real steps: one thread against all
    (or against `most`, when the caller leaves cores to others: `atom serve` keeps one for its
    event loop and its clients).

    Small models run many small parallel regions a step. On an idle machine splitting them over
    the cores pays; on a busy one a thread that is not scheduled holds the others up at every
    region's barrier, and one thread is faster (the README's step-time table measures both).
    Neither can be assumed, so the first steps alternate the candidates (after `warmup` steps), the faster by
    median is kept (the first candidate, all threads, unless another is faster by `margin`: a
    probe's noise must not cost an idle machine its cores), and with `reprobe` the choice is
    checked again every that many steps.
    on()/off() bracket the work (a consumer of a stream never runs with the choice). `fixed` (or
    the environment variable `env`, 0 meaning torch's own setting) skips the timing.
    """

    def __init__(self, device: torch.device, env: str, enabled: bool = True, fixed: int | None = None,
                 probe: int = 6, warmup: int = 2, reprobe: int | None = 256, margin: float = 0.1,
                 most: int | None = None):
        self.have = torch.get_num_threads()
        want = os.environ.get(env, "").strip()
        if device.type != "cpu" or not enabled:
            self.candidates = []
        elif fixed is not None:
            self.candidates = [fixed]
        elif want.isdigit():
            self.candidates = [int(want)] if int(want) else []
        else:
            top = max(1, min(self.have, most or self.have))
            self.candidates = [top, 1] if top > 1 else [1] if self.have > 1 else []
        self.PROBE, self.REPROBE, self.margin = probe, reprobe, margin
        self.choice = self.candidates[0] if self.candidates else None
        self.times = {c: [] for c in self.candidates}
        self.steps = 0
        self.probe_end = warmup + 2 * probe if len(self.candidates) > 1 else 0
        self.active = False

    @property
    def decided(self) -> bool:
        """True once the choice is made (or there was nothing to choose)."""
        return self.steps >= self.probe_end

    def _fastest(self) -> int:
        first, *others = self.candidates
        best = min(others, key=lambda c: statistics.median(self.times[c]), default=first)
        faster = statistics.median(self.times[best]) < (1 - self.margin) * statistics.median(self.times[first])
        return best if faster else first

    def on(self):
        if self.choice is not None and not self.active:
            torch.set_num_threads(self.choice)
            self.active = True

    def off(self):
        if self.active:
            torch.set_num_threads(self.have)
            self.active = False

    def record(self, seconds: float):
        """One step took this long with the current choice; pick the next step's thread count."""
        if not self.probe_end:
            return
        self.steps += 1
        if self.steps > self.probe_end - 2 * self.PROBE:  # not a warm-up step
            self.times[self.choice].append(seconds)
        if self.steps < self.probe_end:
            nxt = self.candidates[self.steps % 2]
        else:
            if self.steps == self.probe_end:
                nxt = self._fastest()
            else:
                nxt = self.choice
            if self.REPROBE is not None and self.steps >= self.probe_end + self.REPROBE:  # the load may have changed
                self.times = {c: [] for c in self.candidates}
                self.probe_end = self.steps + 2 * self.PROBE
        if nxt != self.choice:
            self.choice = nxt
            if self.active:
                torch.set_num_threads(nxt)
