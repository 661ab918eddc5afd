"""What this machine computes fast, and the precision, inference engine and threads chosen from it.

bf16 pays only where the hardware has it: on a CPU with AVX512_BF16 or AMX, bf16 autocast trains
about 2x faster than fp32; on one without (most laptops, AVX2-only servers) PyTorch emulates it
and runs many times slower than fp32. ``precision: auto`` therefore resolves to bf16 only where
it is native, and says why. The figures behind these rules are in ``results/bench/speed-*.json``
(``bench/speed.py``).

No library answers "is bf16 native on this CPU" portably (torch reports only its vector ISA), so
the CPU flags are read here: ``/proc/cpuinfo`` on Linux, torch's ISA report elsewhere. oneDNN's
own ISA cap (``ONEDNN_MAX_CPU_ISA``) is honoured, so a user who limits oneDNN to AVX2 gets fp32.
"""

from __future__ import annotations

import logging
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import torch

log = logging.getLogger(__name__)

# the user-facing precision names; Lightning's names are accepted as well
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
ALIASES = {"fp32": "32-true", "32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed", "16": "16-mixed"}
ENGINES = ("auto", "pytorch", "onnx")
# oneDNN ISA names, weakest first; bf16 is native from AVX512_CORE_BF16 on
ONEDNN_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
               "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10_1_512_AMX",
               "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "DEFAULT")
# measured cost of bf16 autocast where the CPU emulates it (ResNet-50, 224 px; fp32 channels-last
# img/s over bf16 img/s; results/bench/speed-amd-f25m17-avx512-bf16-vnni-isa-avx2.json)
EMULATED_BF16_SLOWDOWN = "11x (training) and 5x (inference)"


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's name and the instruction-set features that decide precision and engine."""

    model: str
    vendor: str = ""
    family: str = ""
    model_number: str = ""
    flags: frozenset[str] = field(default_factory=frozenset)
    onednn_max_isa: str | None = None  # ONEDNN_MAX_CPU_ISA, when the user caps oneDNN

    @property
    def isa_capped_below_bf16(self) -> bool:
        """oneDNN is told not to use the bf16 instructions even if the CPU has them."""
        cap = (self.onednn_max_isa or "").upper()
        if not cap or cap not in ONEDNN_ISAS:
            return False
        return ONEDNN_ISAS.index(cap) < ONEDNN_ISAS.index("AVX512_CORE_BF16")

    @property
    def native_bf16(self) -> bool:
        """AVX512_BF16 or AMX-BF16, and oneDNN allowed to use them."""
        return bool(self.flags & {"avx512_bf16", "amx_bf16"}) and not self.isa_capped_below_bf16

    @property
    def vnni(self) -> bool:
        """int8 dot-product instructions (what makes int8 inference fast)."""
        return bool(self.flags & {"avx512_vnni", "avx_vnni", "amx_int8"})

    @property
    def avx512(self) -> bool:
        return "avx512f" in self.flags

    @property
    def amx(self) -> bool:
        return bool(self.flags & {"amx_bf16", "amx_tile"})

    def capabilities(self) -> dict[str, bool]:
        return {"avx2": "avx2" in self.flags, "avx512": self.avx512, "vnni": self.vnni,
                "avx512_bf16": "avx512_bf16" in self.flags, "amx": self.amx, "native_bf16": self.native_bf16}

    def kind(self) -> str:
        """A short file-name-safe name of this CPU kind, e.g. ``amd-f25m17-avx512-bf16-vnni``."""
        vendor = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(self.vendor, self.vendor.lower() or "cpu")
        parts = [vendor + (f"-f{self.family}m{self.model_number}" if self.family else "")]
        parts.append("amx" if self.amx else "avx512" if self.avx512 else "avx2" if "avx2" in self.flags else
                     platform.machine().lower() or "generic")
        if "avx512_bf16" in self.flags and not self.amx:
            parts.append("bf16")
        if self.vnni:
            parts.append("vnni")
        if self.onednn_max_isa:
            parts.append("isa-" + self.onednn_max_isa.lower())
        return re.sub(r"[^a-z0-9.-]+", "-", "-".join(parts))

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out["flags"] = sorted(f for f in self.flags if f.startswith(("avx", "amx", "fma", "f16c")))
        return {**out, "capabilities": self.capabilities(), "kind": self.kind()}


def _parse_cpuinfo(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor is enough
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_info_from(cpuinfo_text: str | None, onednn_max_isa: str | None = None) -> CpuInfo:
    """A :class:`CpuInfo` from the text of ``/proc/cpuinfo`` (``None`` where there is none)."""
    if cpuinfo_text:
        f = _parse_cpuinfo(cpuinfo_text)
        flags = frozenset((f.get("flags") or f.get("Features") or "").split())
        return CpuInfo(model=f.get("model name", platform.processor() or "unknown"), vendor=f.get("vendor_id", ""),
                       family=f.get("cpu family", ""), model_number=f.get("model", ""), flags=flags,
                       onednn_max_isa=onednn_max_isa)
    # no /proc/cpuinfo (macOS, Windows): torch's vector ISA is all we know; bf16 is not assumed native
    isa = torch.backends.cpu.get_cpu_capability().lower()
    isa_flags = {"avx2"} if isa.startswith("avx2") else {"avx2", "avx512f"} if isa.startswith("avx512") else set()
    return CpuInfo(model=platform.processor() or platform.machine() or "unknown", flags=frozenset(isa_flags),
                   onednn_max_isa=onednn_max_isa)


@lru_cache(maxsize=1)
def detect_cpu() -> CpuInfo:
    """This machine's CPU."""
    try:
        with open("/proc/cpuinfo") as fh:
            text: str | None = fh.read()
    except OSError:
        text = None
    return cpu_info_from(text, os.environ.get("ONEDNN_MAX_CPU_ISA") or None)


@dataclass(frozen=True)
class GpuInfo:
    """The first CUDA device, if any."""

    name: str
    bf16: bool


def detect_gpu() -> GpuInfo | None:
    if not torch.cuda.is_available():
        return None
    return GpuInfo(torch.cuda.get_device_name(0), bool(torch.cuda.is_bf16_supported()))


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``precision`` resolved to, on which device, and why."""

    requested: str
    precision: str  # a Lightning precision: 32-true | bf16-mixed | 16-mixed
    device: str  # cpu | cuda
    reason: str
    warning: str | None = None

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16-mixed"

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def normalise_precision(value: str) -> str:
    """``fp32``/``bf16``/``fp16`` -> Lightning's names; raise ``ValueError`` on anything unknown."""
    name = ALIASES.get(str(value).lower(), str(value).lower())
    if name not in PRECISIONS:
        raise ValueError(f"precision: unknown {value!r} (auto | fp32 | bf16 | fp16, or {' | '.join(PRECISIONS[1:])})")
    return name


def uses_gpu(accelerator: str, gpu: GpuInfo | None) -> bool:
    return gpu is not None and accelerator in ("auto", "gpu", "cuda")


def resolve_precision(requested: str, accelerator: str = "auto", cpu: CpuInfo | None = None,
                      gpu: GpuInfo | None = None) -> PrecisionChoice:
    """The precision to run at: ``auto`` is bf16 only where it is native, else fp32 (fp16 on GPUs
    without bf16). A forced bf16 on a CPU that emulates it comes with a warning."""
    name = normalise_precision(requested)
    cpu = cpu or detect_cpu()
    if uses_gpu(accelerator, gpu):
        assert gpu is not None
        if name != "auto":
            return PrecisionChoice(requested, name, "cuda", f"set explicitly ({gpu.name})")
        if gpu.bf16:
            return PrecisionChoice(requested, "bf16-mixed", "cuda", f"{gpu.name} supports bf16")
        return PrecisionChoice(requested, "16-mixed", "cuda", f"{gpu.name} lacks bf16: fp16 autocast")
    kind = cpu.kind()
    if name == "auto":
        if cpu.native_bf16:
            return PrecisionChoice(requested, "bf16-mixed", "cpu", f"CPU {kind} has native bf16 (AVX512_BF16/AMX)")
        why = ("oneDNN capped at " + str(cpu.onednn_max_isa)) if cpu.isa_capped_below_bf16 else "no AVX512_BF16/AMX"
        return PrecisionChoice(requested, "32-true", "cpu", f"CPU {kind} has no native bf16 ({why}): fp32")
    warning = None
    if name == "bf16-mixed" and not cpu.native_bf16:
        warning = (f"bf16 on CPU {kind}, which has no native bf16: it is emulated, {EMULATED_BF16_SLOWDOWN} "
                   "slower than fp32 when measured on such a CPU; use precision auto (fp32 here)")
    if name == "16-mixed":
        warning = "fp16 autocast on a CPU is emulated and slow; use precision auto"
    return PrecisionChoice(requested, name, "cpu", "set explicitly", warning)


@lru_cache(maxsize=16)
def choose_precision(requested: str, accelerator: str = "auto") -> PrecisionChoice:
    """:func:`resolve_precision` on this machine, logging the choice and any warning (once per
    process and setting)."""
    choice = resolve_precision(requested, accelerator, detect_cpu(), detect_gpu())
    log.info("precision %s -> %s (%s)", choice.requested, choice.precision, choice.reason)
    if choice.warning:
        log.warning(choice.warning)
    return choice


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
    """The inference path: PyTorch at a precision, or an exported ONNX model under ONNX Runtime."""

    engine: str  # pytorch | onnx
    precision: str  # 32-true | bf16-mixed for PyTorch; int8 | fp32 for ONNX
    onnx_path: str | None
    reason: str

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def resolve_engine(requested: str, precision: PrecisionChoice, onnx_int8: str | None = None,
                   onnx_fp32: str | None = None) -> EngineChoice:
    """The fastest available inference path. Measured order on CPUs (``results/bench/speed-*.json``):
    ONNX Runtime int8 > ONNX Runtime fp32 > PyTorch bf16 (native only) > PyTorch fp32 channels-last.
    int8 wins with VNNI and also without it (the weights' bandwidth halves), so no CPU flag
    changes the order; on a GPU PyTorch is used."""
    if requested not in ENGINES:
        raise ValueError(f"engine: unknown {requested!r} ({' | '.join(ENGINES)})")
    torch_choice = EngineChoice("pytorch", precision.precision, None, f"PyTorch, {precision.reason}")
    if requested == "pytorch" or precision.device == "cuda":
        return torch_choice
    for path, kind in ((onnx_int8, "int8"), (onnx_fp32, "fp32")):
        if path:
            return EngineChoice("onnx", kind, str(path), f"ONNX Runtime {kind}: the fastest measured CPU path present")
    if requested == "onnx":
        raise ValueError("engine onnx: no exported ONNX model found (brain-tumor export -m MODEL)")
    return torch_choice


def describe_hardware() -> dict[str, Any]:
    """The CPU (kind, capabilities) and the GPU, if any."""
    gpu = detect_gpu()
    return {"cpu": detect_cpu().describe(), "gpu": asdict(gpu) if gpu else None}


def describe_compute(precision: PrecisionChoice | None = None, threads: ThreadChoice | None = None,
                     engine: EngineChoice | None = None) -> dict[str, Any]:
    """What was chosen and why, for a run's environment.json or the service's /health."""
    parts = {"precision": precision, "threads": threads, "engine": engine}
    return {name: choice.describe() for name, choice in parts.items() if choice is not None}
