"""The CPU's (and the first GPU's) capabilities that decide precision and engine.

No library answers "is bf16 native on this CPU" portably (torch reports only its vector ISA), so
the CPU flags are read here: ``/proc/cpuinfo`` on Linux, torch's ISA report elsewhere. oneDNN's
own ISA cap (``ONEDNN_MAX_CPU_ISA``) is honoured, so a user who limits oneDNN to AVX2 gets fp32.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import torch

# oneDNN ISA names, weakest first; bf16 is native from AVX512_CORE_BF16 on
ONEDNN_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
               "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10_1_512_AMX",
               "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2", "DEFAULT")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's name and the instruction-set features that decide precision and engine."""

    model: str
    vendor: str = ""
    family: str = ""
    model_number: str = ""
    flags: frozenset[str] = field(default_factory=frozenset)
    onednn_max_isa: str | None = None  # ONEDNN_MAX_CPU_ISA, when the user caps oneDNN

    def _capped_below(self, isa: str) -> bool:
        """oneDNN is told (``ONEDNN_MAX_CPU_ISA``) to stop short of ``isa``; an unknown cap caps nothing."""
        cap = (self.onednn_max_isa or "").upper()
        return cap in ONEDNN_ISAS and ONEDNN_ISAS.index(cap) < ONEDNN_ISAS.index(isa)

    @property
    def isa_capped_below_bf16(self) -> bool:
        """oneDNN is told not to use the bf16 instructions even if the CPU has them."""
        return self._capped_below("AVX512_CORE_BF16")

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

    @property
    def amx_usable(self) -> bool:
        """AMX present and oneDNN not capped below it (else bf16 runs on AVX512_BF16 at best)."""
        return self.amx and not self._capped_below("AVX512_CORE_AMX")

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
