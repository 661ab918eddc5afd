"""The inference engine and the thread pools chosen for this machine."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import torch

from brain_tumor.cpu_capabilities import CpuInfo
from brain_tumor.openvino_runtime import PRECISION_HINTS
from brain_tumor.precision import PrecisionChoice

ENGINES = ("auto", "pytorch", "onnx", "openvino")


def usable_cores() -> int:
    """Cores this process may run on (affinity and cgroup-pinned sets), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadChoice:
    """Threads for PyTorch and ONNX Runtime: one intra-op thread per usable core, one inter-op."""

    intra_op: int
    inter_op: int
    reason: str

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def resolve_threads(requested: int | None = None, cores: int | None = None) -> ThreadChoice:
    """``requested`` intra-op threads, or one per usable core. Inter-op is 1: a ResNet-50 forward
    is a chain of big operators, so parallelism inside each one is what pays."""
    cores = cores or usable_cores()
    if requested is not None:
        if requested < 1:
            raise ValueError("threads must be >= 1")
        return ThreadChoice(requested, 1, "set explicitly")
    return ThreadChoice(cores, 1, f"one per usable core ({cores})")


def apply_threads(choice: ThreadChoice) -> None:
    """Set PyTorch's thread pools (the inter-op pool only if it has not started yet)."""
    torch.set_num_threads(choice.intra_op)
    try:
        torch.set_num_interop_threads(choice.inter_op)
    except RuntimeError:  # already started in this process; harmless
        pass


@dataclass(frozen=True)
class EngineChoice:
    """The inference path: PyTorch at a precision, or an exported ONNX model under ONNX Runtime or
    OpenVINO."""

    engine: str  # pytorch | onnx | openvino
    precision: str  # 32-true | bf16-mixed for PyTorch; int8 | fp32 for ONNX Runtime; auto | f32 | bf16 for OpenVINO
    onnx_path: str | None
    reason: str

    def describe(self) -> dict[str, Any]:
        """As reports record it: the export's path relative to the working directory, so a result
        names no machine's folders."""
        out = asdict(self)
        if self.onnx_path:
            out["onnx_path"] = os.path.relpath(self.onnx_path)
        return out


def resolve_engine(requested: str, precision: PrecisionChoice, onnx_int8: str | None = None,
                   onnx_fp32: str | None = None, cpu: CpuInfo | None = None,
                   openvino: bool = False) -> EngineChoice:
    """The fastest available inference path, in the order measured on CPUs
    (``results/bench/speed-*.json``, ``results/bench/openvino-*.json``):

    - on a CPU with AMX, OpenVINO over the fp32 export (it runs it in bf16): 263.6 img/s against
      91.5 for ONNX Runtime int8 on the Intel Xeon with AMX, same held-out accuracy;
    - elsewhere ONNX Runtime int8 > ONNX Runtime fp32 > PyTorch bf16 (native only) > PyTorch fp32
      channels-last. int8 wins with VNNI and also without it (the weights' bandwidth halves).
      OpenVINO without native bf16 runs f32, measured no faster than ONNX Runtime fp32 (46.3
      against 44.2 img/s with its f32 hint), so it is not chosen there; on AVX512_BF16 without AMX
      it is not measured yet, so ONNX Runtime int8 stays.

    ``openvino``: whether the package is installed; ``cpu``: this CPU (AMX or not, and oneDNN's
    ISA cap). ``auto`` picks OpenVINO only where its precision is its own (a forced fp32 keeps the
    faster ONNX Runtime int8); with ``openvino`` asked for, a forced precision (fp32, bf16) becomes
    its precision hint. On a GPU, PyTorch."""
    if requested not in ENGINES:
        raise ValueError(f"engine: unknown {requested!r} ({' | '.join(ENGINES)})")
    torch_choice = EngineChoice("pytorch", precision.precision, None, f"PyTorch, {precision.reason}")
    if requested == "pytorch" or precision.device == "cuda":
        return torch_choice
    amx = cpu is not None and cpu.amx and not cpu.isa_capped_below_bf16
    if requested == "openvino" or (requested == "auto" and openvino and onnx_fp32 and amx
                                   and precision.requested == "auto"):
        if not openvino:
            raise ValueError("engine openvino: the openvino package is not installed (pip install openvino)")
        if not onnx_fp32:
            raise ValueError("engine openvino: no fp32 ONNX export found (brain-tumor export -m MODEL)")
        if precision.requested != "auto" and precision.precision not in PRECISION_HINTS:
            raise ValueError(f"engine openvino: precision {precision.requested} is not offered (auto, fp32 or bf16)")
        hint = "auto" if precision.requested == "auto" else PRECISION_HINTS[precision.precision]
        why = "OpenVINO over the fp32 export: the fastest measured path on a CPU with AMX (bf16 inside)" \
            if requested == "auto" else "OpenVINO, as asked"
        return EngineChoice("openvino", hint, str(onnx_fp32), why)
    for path, kind in ((onnx_int8, "int8"), (onnx_fp32, "fp32")):
        if path:
            return EngineChoice("onnx", kind, str(path), f"ONNX Runtime {kind}: the fastest measured CPU path present")
    if requested == "onnx":
        raise ValueError("engine onnx: no exported ONNX model found (brain-tumor export -m MODEL)")
    return torch_choice
