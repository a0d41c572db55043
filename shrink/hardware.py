"""What machine a benchmark ran on, and whether two benchmarks are comparable.

Latency figures only compare on the same CPU: INT8 speed-ups in particular
depend on VNNI/AMX instructions (a model that is 3x faster with AVX512-VNNI can
be slower than FP32 without it). The gate therefore compares candidates only
when their ``fingerprint`` matches: a hash of the CPU model, the instruction-set
flags that change inference speed, and the number of cores the benchmark used.
Library versions are reported but kept out of the fingerprint on purpose: a
new ONNX Runtime is something to measure, not a reason to refuse a comparison.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# Instruction-set flags that change transformer inference speed (x86 and Arm names from /proc/cpuinfo).
RELEVANT_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "i8mm",
    "sve",
    "sve2",
    "bf16",
)
LIBRARIES = ("torch", "onnxruntime", "transformers", "tokenizers", "onnx", "numpy")


def _cpuinfo(path: str | Path = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """(CPU model name, flags) of the first processor listed; empty on systems without /proc."""
    model, flags = "", set()
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), flags
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # only the first processor block: they are identical on the machines we target
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    model = fields.get("model name") or fields.get("cpu model") or fields.get("hardware") or ""
    if not model and "cpu implementer" in fields:  # Arm: no model name, identify by implementer and part
        model = f"arm implementer {fields['cpu implementer']} part {fields.get('cpu part', '?')}"
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    return model or platform.processor() or platform.machine(), flags


# x86 flags for int8 dot products into int32 (where int8 GEMM kernels such as torch._int_mm are fast).
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def x86_without_int8_dot() -> bool:
    """An x86 CPU without VNNI or AMX (from /proc/cpuinfo): int8 GEMMs there take slow paths."""
    if platform.machine().lower() not in ("x86_64", "amd64", "x86", "i386", "i686"):
        return False
    return not _cpuinfo()[1] & INT8_DOT_FLAGS


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (a pod's limit)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def library_versions() -> dict[str, str | None]:
    """Installed versions of the inference libraries (read from package metadata, nothing imported)."""
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def fingerprint(cpu_model: str, flags: set[str] | list[str], cores_used: int, machine: str | None = None) -> str:
    """sha256 over what decides inference speed: CPU model, relevant ISA flags, cores used."""
    blob = json.dumps(
        {
            "machine": machine or platform.machine(),
            "cpu_model": cpu_model,
            "flags": sorted(f for f in flags if f in RELEVANT_FLAGS),
            "cores_used": int(cores_used),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def hardware_info(cores_used: int = 1, cpuinfo_path: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """The ``hardware`` section of a benchmark record.

    Args:
        cores_used: Intra-op threads the benchmark ran with (capped by the CPUs available).
        cpuinfo_path: Where to read the CPU description (a parameter only so tests can feed a file).
    """
    model, flags = _cpuinfo(cpuinfo_path)
    logical = available_cpus()
    used = max(1, min(int(cores_used), logical))
    return {
        "fingerprint": fingerprint(model, flags, used),
        "cpu_model": model,
        "cores_used": used,
        "logical_cpus": logical,
        "isa": {
            "avx2": "avx2" in flags,
            "avx512_vnni": "avx512_vnni" in flags,
            "avx_vnni": "avx_vnni" in flags,
            "amx": "amx_int8" in flags,
        },
        "libraries": library_versions(),
    }


def same_hardware(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two benchmark records (or their ``hardware`` sections) were measured on comparable hardware."""
    ha = a.get("hardware", a) if isinstance(a, dict) else {}
    hb = b.get("hardware", b) if isinstance(b, dict) else {}
    fa, fb = ha.get("fingerprint"), hb.get("fingerprint")
    return bool(fa) and fa == fb
