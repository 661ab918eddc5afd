"""Whether bf16 autocast trains faster than fp32 on this CPU: measured once, then remembered.

The CPU's flags do not settle it. With ``bench/speed.py`` (ResNet-50 training step, 224 px, 2
cores), bf16 autocast ran 2.3x as fast as fp32 channels-last on an AMD EPYC family 25 model 17
(AVX512_BF16, no AMX) and on an Intel Xeon family 6 model 167 (AMX), but 0.81x on an Intel Xeon
family 6 model 207 whose AMX is not exposed (AVX512_BF16 alone: its matmul peak 205 GFLOP/s in
bf16 against 373 in fp32). So where a CPU has AVX512_BF16 without AMX, ``precision: auto`` times
a ResNet-50 bottleneck block's training step both ways (1-3 s on 2 cores) and keeps the answer in
the cache home (``bf16-probe.json``), one entry per CPU kind, torch version and thread count.
No library answers this question; the timing is a few lines of torch.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brain_tumor import atomic
from brain_tumor.cpu_capabilities import CpuInfo
from brain_tumor.homes import cache_home

PROBE_FILE = "bf16-probe.json"
PROBE_FORMAT = "brain-tumor-bf16-probe/1"
MIN_SPEEDUP = 1.1  # bf16 must win by this much to be chosen: a tie is not worth its rounding


@dataclass(frozen=True)
class Bf16Probe:
    """Median seconds of one training step of the probe block in fp32 and in bf16 autocast."""

    cpu_kind: str
    torch_version: str
    fp32_seconds: float
    bf16_seconds: float
    threads: int = 0  # torch's intra-op threads while timed

    @property
    def speedup(self) -> float:
        """bf16's speed over fp32's (above 1: bf16 is faster)."""
        return self.fp32_seconds / self.bf16_seconds

    def describe(self) -> dict[str, object]:
        return {**asdict(self), "speedup": round(self.speedup, 3)}


def _bottleneck() -> nn.Module:
    """A ResNet-50 stage-2 bottleneck (256 -> 64 -> 64 -> 256 channels), channels-last."""
    layers = [nn.Conv2d(256, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
              nn.Conv2d(64, 256, 1, bias=False), nn.BatchNorm2d(256)]
    return nn.Sequential(*layers).to(memory_format=torch.channels_last)


def measure_bf16(cpu: CpuInfo, repeats: int = 5, batch: int = 16) -> Bf16Probe:
    """Time the block's forward and backward at 28 x 28, fp32 and bf16 autocast in turn (so a
    load that comes and goes slows both alike), after one warm-up step each."""
    generator = torch.Generator().manual_seed(0)
    block = _bottleneck()
    x = torch.randn(batch, 256, 28, 28, generator=generator).contiguous(memory_format=torch.channels_last)

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = block(x)
        out.float().square().mean().backward()
        return time.perf_counter() - start

    times: dict[bool, list[float]] = {False: [], True: []}
    for bf16 in (False, True):
        step(bf16)
    for _ in range(repeats):
        for bf16 in (False, True):
            times[bf16].append(step(bf16))
    return Bf16Probe(cpu.kind(), torch.__version__, statistics.median(times[False]), statistics.median(times[True]),
                     torch.get_num_threads())


def _key(cpu: CpuInfo) -> str:
    """CPU kind, torch version and the intra-op threads in effect (the timing depends on all three)."""
    return f"{cpu.kind()}|torch-{torch.__version__}|threads-{torch.get_num_threads()}"


def _read(path: Path) -> dict[str, Any]:
    """The cached entries, or none if the file is missing, unreadable or of another format."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict) or data.get("format") != PROBE_FORMAT or not isinstance(data.get("entries"), dict):
        return {}
    entries: dict[str, Any] = data["entries"]
    return entries


def cached_bf16_probe(cpu: CpuInfo, cache_dir: Path | None = None) -> Bf16Probe:
    """This CPU kind's probe from the cache, else measured now and cached (an unwritable cache is
    not an error: the next run measures again)."""
    path = (cache_dir or cache_home()) / PROBE_FILE
    entries = _read(path)
    found = entries.get(_key(cpu))
    if isinstance(found, dict):
        try:
            fp32, bf16 = float(found["fp32_seconds"]), float(found["bf16_seconds"])
        except (KeyError, TypeError, ValueError):
            fp32 = bf16 = 0.0
        if all(math.isfinite(t) and t > 0 for t in (fp32, bf16)):
            return Bf16Probe(cpu.kind(), torch.__version__, fp32, bf16, torch.get_num_threads())
    probe = measure_bf16(cpu)
    try:
        atomic.write_json({"format": PROBE_FORMAT, "entries": {**entries, _key(cpu): probe.describe()}}, path)
    except OSError:
        pass
    return probe
