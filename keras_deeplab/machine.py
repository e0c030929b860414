"""The CPU this process runs on: its model name and the instruction-set flags that decide kernels and precision.

Figures from different machines are not comparable (one day AVX2 only, another AVX-512 with native bfloat16), so
every benchmark prints `describe()` beside its figures; `precision auto` asks `native_bfloat16()`.
"""

from __future__ import annotations

import functools
import os

# The flags that change which kernels TensorFlow's oneDNN picks for float32, bfloat16 and int8 convolutions.
NOTEWORTHY_FLAGS = (
    "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
    "amx_int8", "avx512_fp16",
)  # fmt: skip
# Instructions that compute bfloat16 products natively; without them oneDNN emulates bfloat16 (slower than float32).
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's "key: value" lines of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf8") as handle:
            for line in handle:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's model name, e.g. "AMD EPYC" or "Intel(R) Xeon(R) Platinum 8481C"; "unknown CPU" if unreadable."""
    return _cpuinfo().get("model name", "unknown CPU")


def cpu_flags() -> frozenset[str]:
    """Every instruction-set flag the CPU reports."""
    return frozenset(_cpuinfo().get("flags", "").split())


def native_bfloat16() -> list[str]:
    """The flags by which this CPU computes bfloat16 natively (AVX512_BF16, AMX); empty where it is emulated."""
    return [flag for flag in NATIVE_BFLOAT16_FLAGS if flag in cpu_flags()]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and `taskset` narrow), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def describe() -> str:
    """One line for a benchmark's output: "CPU: <model>, <n> cores; flags: avx avx2 fma ...; native bfloat16: no"."""
    flags = " ".join(flag for flag in NOTEWORTHY_FLAGS if flag in cpu_flags()) or "none of note"
    native = ", ".join(native_bfloat16()) or "no (emulated)"
    return f"CPU: {cpu_model()}, {os.cpu_count()} cores; flags: {flags}; native bfloat16: {native}"
