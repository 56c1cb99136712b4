"""Devices and precision: chosen from what the hardware has, never assumed."""

from __future__ import annotations

import pytest
import torch

from atomlib import device as D
from atomlib.errors import AtomError

CPU = torch.device("cpu")

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme sse sse2 avx avx2 fma avx512f avx512_bf16 avx512_vnni
bugs\t\t: sysret_ss_attrs
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics bf16 i8mm
CPU implementer\t: 0x41
"""


def test_parse_cpu_flags_reads_x86_and_arm_lines():
    assert D.parse_cpu_flags(X86_CPUINFO) == {"fpu", "vme", "sse", "sse2", "avx", "avx2", "fma", "avx512f",
                                               "avx512_bf16", "avx512_vnni"}
    assert {"bf16", "i8mm", "asimd"} <= D.parse_cpu_flags(ARM_CPUINFO)
    assert D.parse_cpu_flags("processor : 0\n") == frozenset()


def test_cpu_flags_of_this_machine_is_a_cached_set():
    flags = D.cpu_flags()
    assert isinstance(flags, frozenset) and D.cpu_flags() is flags
    if open("/proc/cpuinfo").read().count("flags"):
        assert "sse2" in flags or "fpu" in flags


def test_auto_dtype_is_float32_where_bf16_is_not_fast(monkeypatch):
    monkeypatch.delenv("ATOM_CPU_BF16", raising=False)
    monkeypatch.setattr(D, "cpu_bf16_is_fast", lambda: False)
    assert D.pick_dtype(CPU, "auto") == torch.float32
    monkeypatch.setattr(D, "cpu_bf16_is_fast", lambda: True)
    assert D.pick_dtype(CPU, "auto") == torch.bfloat16


def test_explicit_dtype_is_taken_as_asked():
    assert D.pick_dtype(CPU, "float32") == torch.float32
    assert D.pick_dtype(CPU, "bfloat16") == torch.bfloat16
    assert D.pick_dtype(torch.device("mps"), "auto") == torch.float32


def test_no_bf16_flags_means_no_bf16_and_no_probe(monkeypatch):
    """An AVX2-only CPU emulates bf16: never pick it, and do not even time the probe there."""
    monkeypatch.delenv("ATOM_CPU_BF16", raising=False)
    monkeypatch.setattr(D, "cpu_flags", lambda: frozenset({"sse2", "avx", "avx2", "fma"}))

    def probe_must_not_run(*a, **k):
        raise AssertionError("probe ran on a CPU without bf16 flags")

    monkeypatch.setattr(D, "cpu_bf16_speedup", probe_must_not_run)
    assert D.cpu_bf16_flags() == [] and D.cpu_bf16_is_fast() is False and D.cpu_has_bf16_units() is False
    assert D.pick_dtype(CPU, "auto") == torch.float32


def test_bf16_flags_still_need_the_probe_to_win(monkeypatch):
    monkeypatch.delenv("ATOM_CPU_BF16", raising=False)
    monkeypatch.setattr(D, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    monkeypatch.setattr(D, "cpu_bf16_speedup", lambda: 0.1)  # flags present, but slow (e.g. an old library)
    assert D.cpu_bf16_is_fast() is False and D.cpu_has_bf16_units() is False
    monkeypatch.setattr(D, "cpu_bf16_speedup", lambda: 2.5)  # AVX512-BF16 dot products: fast, not matrix units
    assert D.cpu_bf16_is_fast() is True and D.cpu_has_bf16_units() is False
    monkeypatch.setattr(D, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}))
    monkeypatch.setattr(D, "cpu_bf16_speedup", lambda: 9.0)  # AMX
    assert D.cpu_bf16_is_fast() is True and D.cpu_has_bf16_units() is True
    monkeypatch.setenv("ATOM_CPU_BF16", "0")  # the escape hatch wins over both
    assert D.cpu_bf16_is_fast() is False and D.cpu_has_bf16_units() is False


def test_bf16_probe_is_fast_cached_and_positive():
    D.cpu_bf16_speedup.cache_clear()
    import time

    t0 = time.perf_counter()
    ratio = D.cpu_bf16_speedup()
    first = time.perf_counter() - t0
    assert ratio > 0 and D.cpu_bf16_speedup() == ratio
    assert first < 5  # generous: the budget is 0.3 s, but this machine is shared
    assert torch.get_num_threads() >= 1


def test_cpu_report_names_what_the_choice_rests_on():
    r = D.cpu_report()
    assert set(r) == {"model", "bf16_flags", "bf16_matmul_speedup", "bf16_fast", "bf16_units"}
    assert isinstance(r["bf16_units"], bool) and isinstance(r["model"], str)
    assert r["bf16_fast"] or not r["bf16_units"]  # matrix units are a kind of fast bf16


def test_pick_device_cuda_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(AtomError, match="CUDA is not available"):
        D.pick_device("cuda")
    with pytest.raises(AtomError):
        D.pick_device("cuda:1")


def test_pick_device_auto_and_cpu():
    assert D.pick_device("cpu") == CPU
    assert D.pick_device("auto").type in ("cpu", "cuda", "mps")


def test_measure_peak_flops_is_positive():
    for dtype in (torch.float32, torch.bfloat16):
        peak = D.measure_peak_flops(CPU, dtype, n=128, seconds=0.05)
        assert peak > 1e6


def test_autocast_is_a_noop_for_float32_and_bf16_otherwise():
    with D.autocast(CPU, torch.float32):
        assert not torch.is_autocast_enabled("cpu")
    with D.autocast(CPU, torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16
