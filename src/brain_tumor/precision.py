"""The precision to run at, from the hardware's capabilities, and why.

bf16 pays only where the hardware makes it fast. Without AVX512_BF16 or AMX PyTorch emulates it,
many times slower than fp32, so ``auto`` is fp32 there. With AMX, bf16 autocast trains about 2x
faster than fp32. With AVX512_BF16 alone it can go either way (2.3x on one CPU, 0.81x on another:
:mod:`brain_tumor.bf16_probe`), so there ``auto`` follows a measurement of this CPU when one is
given (:func:`brain_tumor.hardware.choose_precision` gives it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from brain_tumor.bf16_probe import MIN_SPEEDUP, Bf16Probe
from brain_tumor.cpu_capabilities import CpuInfo, GpuInfo, detect_cpu

# the user-facing precision names; Lightning's names are accepted as well
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
ALIASES = {"fp32": "32-true", "32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed", "16": "16-mixed"}
# measured cost of bf16 autocast where the CPU emulates it (ResNet-50, 224 px; fp32 channels-last
# img/s over bf16 img/s; results/bench/speed-amd-f25m17-avx512-bf16-vnni-isa-avx2.json)
EMULATED_BF16_SLOWDOWN = "11x (training) and 5x (inference)"


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``precision`` resolved to, on which device, and why."""

    requested: str
    precision: str  # a Lightning precision: 32-true | bf16-mixed | 16-mixed
    device: str  # cpu | cuda
    reason: str
    warning: str | None = None
    probe: dict[str, Any] | None = None  # the bf16 measurement behind the choice, if one was made

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
                      gpu: GpuInfo | None = None, probe: Callable[[CpuInfo], Bf16Probe] | None = None
                      ) -> PrecisionChoice:
    """The precision to run at: ``auto`` is bf16 where it is native and fast, else fp32 (fp16 on
    GPUs without bf16). On a CPU with AVX512_BF16 but no AMX, ``probe`` (a measurement of this CPU)
    decides; without one the flag does. A forced bf16 that is emulated, or measured slower than
    fp32, comes with a warning."""
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
    measured, failed = None, None
    if probe is not None and cpu.native_bf16 and not cpu.amx_usable and name in ("auto", "bf16-mixed"):
        try:
            measured = probe(cpu)
        except (RuntimeError, OSError, ValueError) as exc:  # a failed timing must not stop the run
            failed = f"{type(exc).__name__}: {exc}".splitlines()[0]
    record = None if measured is None else measured.describe()
    if name == "auto":
        if not cpu.native_bf16:
            why = ("oneDNN capped at " + str(cpu.onednn_max_isa)) if cpu.isa_capped_below_bf16 else "no AVX512_BF16/AMX"
            return PrecisionChoice(requested, "32-true", "cpu", f"CPU {kind} has no native bf16 ({why}): fp32")
        if measured is None:
            how = "AMX" if cpu.amx_usable else f"AVX512_BF16, timing failed ({failed})" if failed else \
                "AVX512_BF16, not measured"
            return PrecisionChoice(requested, "bf16-mixed", "cpu", f"CPU {kind} has native bf16 ({how})")
        faster = measured.speedup >= MIN_SPEEDUP
        return PrecisionChoice(requested, "bf16-mixed" if faster else "32-true", "cpu",
                               f"CPU {kind} has AVX512_BF16 without AMX; bf16 autocast measured "
                               f"{measured.speedup:.2f}x fp32's speed on a training block here: "
                               f"{'bf16' if faster else 'fp32'}", probe=record)
    warning = None
    if name == "bf16-mixed" and not cpu.native_bf16:
        warning = (f"bf16 on CPU {kind}, which has no native bf16: it is emulated, {EMULATED_BF16_SLOWDOWN} "
                   "slower than fp32 when measured on such a CPU; use precision auto (fp32 here)")
    elif measured is not None and measured.speedup < 1:
        warning = (f"bf16 on CPU {kind} measured {measured.speedup:.2f}x fp32's speed on a training block here "
                   "(AVX512_BF16 without AMX); use precision auto (fp32 here)")
    if name == "16-mixed":
        warning = "fp16 autocast on a CPU is emulated and slow; use precision auto"
    return PrecisionChoice(requested, name, "cpu", "set explicitly", warning, probe=record)
