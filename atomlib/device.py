"""Devices and precision, chosen from what the hardware really has.

`auto` picks CUDA, then MPS, then CPU. Precision `auto` picks bf16 autocast only where it
is fast: CUDA GPUs that support bf16 (fp16 with a grad scaler on older ones), and CPUs
whose bf16 matrix units beat float32 in a short probe. On CPUs that only emulate bf16 (AVX2)
a bf16 training step is ~40x slower than float32, so there the answer is float32. Nothing
is assumed from the CPU's name: the flags are read and the probe is timed, once per process.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
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


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """Measured speed of a bf16 matrix product relative to float32 on this CPU (a ~0.2 s probe)."""
    n = 512
    a32, b32 = torch.randn(n, n), torch.randn(n, n)
    a16, b16 = a32.bfloat16(), b32.bfloat16()

    def rate(a, b):
        a @ b  # warm up (kernel selection, caches)
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(4):
                a @ b
            best = min(best, time.perf_counter() - t0)
        return 1.0 / best

    return rate(a16, b16) / rate(a32, b32)


def cpu_has_bf16_units() -> bool:
    """True when bf16 matrix products run on real hardware units (AMX, AVX512-BF16) and the probe
    confirms they beat float32 by a clear margin; False where bf16 is emulated."""
    if os.environ.get("ATOM_CPU_BF16") in ("0", "1"):  # escape hatch for experiments
        return os.environ["ATOM_CPU_BF16"] == "1"
    flags = cpu_flags()
    hw = bool(flags & {"amx_bf16", "avx512_bf16"}) or platform.machine() in ("arm64", "aarch64") and "bf16" in flags
    return hw and cpu_bf16_speedup() >= 1.5


def pick_dtype(device: torch.device, pref: str = "auto") -> torch.dtype:
    """The compute precision for autocast: bf16 / fp16 where the device does it fast, else float32."""
    if pref != "auto":
        return DTYPES[pref]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_bf16_units() else torch.float32
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
