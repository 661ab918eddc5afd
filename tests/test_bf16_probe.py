"""precision auto on a CPU with AVX512_BF16 but no AMX follows a measurement of that CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brain_tumor import bf16_probe, hardware
from brain_tumor.bf16_probe import PROBE_FILE, Bf16Probe, cached_bf16_probe, measure_bf16
from brain_tumor.hardware import GpuInfo, cpu_info_from, resolve_precision
from tests.test_hardware import SAPPHIRE, ZEN3, ZEN4

EMERALD = ("vendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\nmodel name\t: Intel Xeon\n"
           "flags\t\t: avx2 avx512f avx512_vnni avx512_bf16 avx512_fp16\n")  # AMX not exposed


def fake_probe(speedup: float, calls: list[str] | None = None):  # type: ignore[no-untyped-def]
    def probe(cpu):  # type: ignore[no-untyped-def]
        if calls is not None:
            calls.append(cpu.kind())
        return Bf16Probe(cpu.kind(), "test", 1.0, 1.0 / speedup)
    return probe


def test_the_measurement_decides_where_avx512_bf16_comes_without_amx() -> None:
    slow = resolve_precision("auto", cpu=cpu_info_from(EMERALD), probe=fake_probe(0.8))
    assert slow.precision == "32-true" and "0.80x" in slow.reason and slow.probe is not None
    assert slow.probe["speedup"] == pytest.approx(0.8)
    fast = resolve_precision("auto", cpu=cpu_info_from(ZEN4), probe=fake_probe(2.3))
    assert fast.precision == "bf16-mixed" and "2.30x" in fast.reason
    tie = resolve_precision("auto", cpu=cpu_info_from(ZEN4), probe=fake_probe(1.05))
    assert tie.precision == "32-true"  # a tie is not worth bf16's rounding


def test_amx_and_emulated_bf16_are_not_measured() -> None:
    calls: list[str] = []
    assert resolve_precision("auto", cpu=cpu_info_from(SAPPHIRE), probe=fake_probe(0.5, calls)).bf16
    assert resolve_precision("auto", cpu=cpu_info_from(ZEN3), probe=fake_probe(9.0, calls)).precision == "32-true"
    assert resolve_precision("fp32", cpu=cpu_info_from(EMERALD), probe=fake_probe(0.5, calls)).probe is None
    assert calls == []


def test_forcing_bf16_where_it_was_measured_slower_warns_in_one_line() -> None:
    forced = resolve_precision("bf16", cpu=cpu_info_from(EMERALD), probe=fake_probe(0.8))
    assert forced.bf16 and forced.warning is not None and "\n" not in forced.warning and "0.80x" in forced.warning
    assert resolve_precision("bf16", cpu=cpu_info_from(ZEN4), probe=fake_probe(2.3)).warning is None


def test_the_probe_is_measured_once_per_cpu_kind_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    measured: list[str] = []

    def measure(cpu):  # type: ignore[no-untyped-def]
        measured.append(cpu.kind())
        return Bf16Probe(cpu.kind(), "x", 2.0, 1.0)

    monkeypatch.setattr(bf16_probe, "measure_bf16", measure)
    emerald, zen4 = cpu_info_from(EMERALD), cpu_info_from(ZEN4)
    assert cached_bf16_probe(emerald, tmp_path).speedup == pytest.approx(2.0)
    assert cached_bf16_probe(emerald, tmp_path).speedup == pytest.approx(2.0)
    cached_bf16_probe(zen4, tmp_path)
    assert measured == [emerald.kind(), zen4.kind()]
    entries = json.loads((tmp_path / PROBE_FILE).read_text())["entries"]
    assert len(entries) == 2 and all(e["speedup"] == 2.0 for e in entries.values())
    (tmp_path / PROBE_FILE).write_text("{not json")  # a damaged cache is measured anew, not an error
    assert cached_bf16_probe(emerald, tmp_path).speedup == pytest.approx(2.0) and len(measured) == 3


def test_choose_precision_measures_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(hardware, "detect_cpu", lambda: cpu_info_from(EMERALD))
    monkeypatch.setattr(hardware, "detect_gpu", lambda: None)
    monkeypatch.setattr(hardware, "cached_bf16_probe", fake_probe(0.8, calls))
    hardware.choose_precision.cache_clear()
    try:
        assert hardware.choose_precision("auto").precision == "32-true" and len(calls) == 1
    finally:
        hardware.choose_precision.cache_clear()


def test_the_real_measurement_times_both_precisions() -> None:
    probe = measure_bf16(cpu_info_from(ZEN4), repeats=1, batch=2)
    assert probe.fp32_seconds > 0 and probe.bf16_seconds > 0 and probe.speedup > 0


def test_the_probe_runs_only_where_it_can_change_the_answer() -> None:
    calls: list[str] = []
    probe = fake_probe(0.8, calls)
    emerald = cpu_info_from(EMERALD)
    assert resolve_precision("auto", "gpu", emerald, GpuInfo("H100", True), probe).device == "cuda"
    assert resolve_precision("fp16", cpu=emerald, probe=probe).precision == "16-mixed"
    assert resolve_precision("auto", cpu=cpu_info_from(EMERALD, onednn_max_isa="AVX2"), probe=probe).precision \
        == "32-true"
    assert calls == []
    # AMX that oneDNN may not use is AVX512_BF16 at best: measured like it
    capped = cpu_info_from(SAPPHIRE, onednn_max_isa="AVX512_CORE_BF16")
    assert capped.amx and not capped.amx_usable and cpu_info_from(SAPPHIRE).amx_usable
    assert resolve_precision("auto", cpu=capped, probe=probe).precision == "32-true" and len(calls) == 1


def test_a_failed_timing_falls_back_to_the_flag_and_says_so() -> None:
    def broken(cpu):  # type: ignore[no-untyped-def]
        raise RuntimeError("oneDNN primitive creation failed\nmore")

    choice = resolve_precision("auto", cpu=cpu_info_from(EMERALD), probe=broken)
    assert choice.bf16 and "timing failed (RuntimeError: oneDNN primitive creation failed)" in choice.reason


@pytest.mark.parametrize("text", ["[" * 100_000, '{"format": "brain-tumor-bf16-probe/1", "entries": '
                                  '{"KEY": {"fp32_seconds": Infinity, "bf16_seconds": 1.0}}}'])
def test_a_damaged_or_absurd_cache_entry_is_measured_anew(text: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    emerald = cpu_info_from(EMERALD)
    (tmp_path / PROBE_FILE).write_text(text.replace("KEY", bf16_probe._key(emerald)))
    monkeypatch.setattr(bf16_probe, "measure_bf16", lambda cpu: Bf16Probe(cpu.kind(), "x", 1.0, 2.0))
    assert cached_bf16_probe(emerald, tmp_path).speedup == pytest.approx(0.5)


def test_an_unwritable_cache_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setattr(bf16_probe, "measure_bf16", lambda cpu: Bf16Probe(cpu.kind(), "x", 2.0, 1.0))
    assert cached_bf16_probe(cpu_info_from(EMERALD), blocked).speedup == pytest.approx(2.0)
