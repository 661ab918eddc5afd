"""What this machine computes fast, and the precision, inference engine and threads chosen from it.

bf16 pays only where the hardware makes it fast: with AMX, bf16 autocast trains about 2x faster
than fp32; without AVX512_BF16 or AMX (most laptops, AVX2-only servers) PyTorch emulates it and
runs many times slower than fp32; with AVX512_BF16 alone it can go either way, so this machine
is measured once (:mod:`brain_tumor.bf16_probe`). ``precision: auto`` resolves to bf16 only
where it is native and fast, and says why. The figures behind these rules are in
``results/bench/speed-*.json`` (``bench/speed.py``).

No library answers "is bf16 native on this CPU" portably (torch reports only its vector ISA), so
the CPU flags are read here: ``/proc/cpuinfo`` on Linux, torch's ISA report elsewhere. oneDNN's
own ISA cap (``ONEDNN_MAX_CPU_ISA``) is honoured, so a user who limits oneDNN to AVX2 gets fp32.

The capabilities are read in :mod:`brain_tumor.cpu_capabilities`, the precision chosen in
:mod:`brain_tumor.precision`, threads and engine in :mod:`brain_tumor.engine_choice`; this module
applies them to this machine and keeps every name importable from here.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from functools import lru_cache
from typing import Any

from brain_tumor.bf16_probe import cached_bf16_probe
from brain_tumor.cpu_capabilities import ONEDNN_ISAS, CpuInfo, GpuInfo, cpu_info_from, detect_cpu, detect_gpu
from brain_tumor.engine_choice import (
    ENGINES,
    EngineChoice,
    ThreadChoice,
    apply_threads,
    resolve_engine,
    resolve_threads,
    usable_cores,
)
from brain_tumor.precision import (
    ALIASES,
    EMULATED_BF16_SLOWDOWN,
    PRECISIONS,
    PrecisionChoice,
    normalise_precision,
    resolve_precision,
    uses_gpu,
)

__all__ = [
    "ALIASES", "EMULATED_BF16_SLOWDOWN", "ENGINES", "ONEDNN_ISAS", "PRECISIONS", "CpuInfo", "EngineChoice", "GpuInfo",
    "PrecisionChoice", "ThreadChoice", "apply_threads", "choose_precision", "cpu_info_from", "describe_compute",
    "describe_hardware", "detect_cpu", "detect_gpu", "normalise_precision", "resolve_engine", "resolve_precision",
    "resolve_threads", "usable_cores", "uses_gpu",
]

log = logging.getLogger(__name__)


@lru_cache(maxsize=16)
def choose_precision(requested: str, accelerator: str = "auto") -> PrecisionChoice:
    """:func:`resolve_precision` on this machine, logging the choice and any warning (once per
    process and setting)."""
    choice = resolve_precision(requested, accelerator, detect_cpu(), detect_gpu(), cached_bf16_probe)
    log.info("precision %s -> %s (%s)", choice.requested, choice.precision, choice.reason)
    if choice.warning:
        log.warning(choice.warning)
    return choice


def describe_hardware() -> dict[str, Any]:
    """The CPU (kind, capabilities) and the GPU, if any."""
    gpu = detect_gpu()
    return {"cpu": detect_cpu().describe(), "gpu": asdict(gpu) if gpu else None}


def describe_compute(precision: PrecisionChoice | None = None, threads: ThreadChoice | None = None,
                     engine: EngineChoice | None = None) -> dict[str, Any]:
    """What was chosen and why, for a run's environment.json or the service's /health."""
    parts = {"precision": precision, "threads": threads, "engine": engine}
    return {name: choice.describe() for name, choice in parts.items() if choice is not None}
