"""precision/engine/threads chosen from the hardware (capabilities mocked)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from brain_tumor import hardware
from brain_tumor.bf16_probe import Bf16Probe
from brain_tumor.config import load_config, resolve_precision_setting
from brain_tumor.hardware import CpuInfo, GpuInfo, cpu_info_from, resolve_engine, resolve_precision, resolve_threads

ZEN3 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
        "model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse sse2 avx avx2 fma f16c\n\nprocessor\t: 1\n")
ZEN4 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        "model name\t: AMD EPYC 9B14\nflags\t\t: avx avx2 fma avx512f avx512_bf16 avx512_vnni\n")
SAPPHIRE = ("vendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel Xeon\n"
            "flags\t\t: avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n")


def test_cpuinfo_is_parsed_into_capabilities() -> None:
    zen3, zen4, spr = cpu_info_from(ZEN3), cpu_info_from(ZEN4), cpu_info_from(SAPPHIRE)
    assert zen3.model == "AMD EPYC 7B13" and not zen3.native_bf16 and not zen3.vnni and not zen3.avx512
    assert zen4.native_bf16 and zen4.vnni and zen4.avx512 and not zen4.amx
    assert spr.native_bf16 and spr.amx
    assert zen3.kind() == "amd-f25m1-avx2" and zen4.kind() == "amd-f25m17-avx512-bf16-vnni"
    assert spr.kind() == "intel-f6m143-amx-vnni"


def test_auto_is_fp32_without_native_bf16_and_bf16_with_it() -> None:
    zen3 = resolve_precision("auto", cpu=cpu_info_from(ZEN3))
    assert zen3.precision == "32-true" and zen3.device == "cpu" and "no native bf16" in zen3.reason
    zen4 = resolve_precision("auto", cpu=cpu_info_from(ZEN4))
    assert zen4.precision == "bf16-mixed" and "native bf16" in zen4.reason
    assert resolve_precision("auto", cpu=cpu_info_from(SAPPHIRE)).bf16


def test_onednn_isa_cap_below_bf16_means_fp32() -> None:
    capped = cpu_info_from(ZEN4, onednn_max_isa="AVX2")
    assert capped.isa_capped_below_bf16 and not capped.native_bf16
    assert resolve_precision("auto", cpu=capped).precision == "32-true"
    assert cpu_info_from(ZEN4, onednn_max_isa="AVX512_CORE_AMX").native_bf16


def test_forced_bf16_on_an_emulating_cpu_warns_in_one_line() -> None:
    forced = resolve_precision("bf16", cpu=cpu_info_from(ZEN3))
    assert forced.precision == "bf16-mixed" and forced.warning is not None
    assert "\n" not in forced.warning and "slower than fp32" in forced.warning
    assert resolve_precision("bf16-mixed", cpu=cpu_info_from(ZEN4)).warning is None
    assert resolve_precision("fp32", cpu=cpu_info_from(ZEN3)).precision == "32-true"


def test_gpu_gets_bf16_or_fp16_autocast() -> None:
    cpu = cpu_info_from(ZEN3)
    assert resolve_precision("auto", "gpu", cpu, GpuInfo("H100", True)).precision == "bf16-mixed"
    assert resolve_precision("auto", "auto", cpu, GpuInfo("T4", False)).precision == "16-mixed"
    assert resolve_precision("auto", "cpu", cpu, GpuInfo("H100", True)).device == "cpu"  # accelerator=cpu wins


def test_unknown_precision_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown 'fp8'"):
        resolve_precision("fp8", cpu=cpu_info_from(ZEN4))
    with pytest.raises(ValueError, match="precision"):
        load_config(None, ["train.precision=fp8"])


def test_run_config_records_what_auto_chose(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    hardware.choose_precision.cache_clear()
    monkeypatch.setattr(hardware, "detect_cpu", lambda: cpu_info_from(ZEN3))
    monkeypatch.setattr(hardware, "detect_gpu", lambda: None)
    cfg = load_config(None, [])
    assert cfg.train.precision == "auto"
    with caplog.at_level(logging.INFO):
        assert resolve_precision_setting(cfg).train.precision == "32-true"
    assert any("auto -> 32-true" in r.getMessage() for r in caplog.records)
    hardware.choose_precision.cache_clear()
    monkeypatch.setattr(hardware, "detect_cpu", lambda: cpu_info_from(ZEN4))
    monkeypatch.setattr(hardware, "cached_bf16_probe", lambda cpu: Bf16Probe(cpu.kind(), "test", 2.3, 1.0))
    assert resolve_precision_setting(cfg).train.precision == "bf16-mixed"  # as measured on that CPU
    hardware.choose_precision.cache_clear()


def test_engine_prefers_int8_then_fp32_onnx_then_pytorch() -> None:
    zen3 = resolve_precision("auto", cpu=cpu_info_from(ZEN3))
    assert resolve_engine("auto", zen3, "m.int8.onnx", "m.onnx").precision == "int8"
    assert resolve_engine("auto", zen3, None, "m.onnx").precision == "fp32"
    plain = resolve_engine("auto", zen3)
    assert (plain.engine, plain.precision) == ("pytorch", "32-true")
    assert resolve_engine("pytorch", zen3, "m.int8.onnx").engine == "pytorch"
    with pytest.raises(ValueError, match="no exported ONNX"):
        resolve_engine("onnx", zen3)
    gpu = resolve_precision("auto", "gpu", cpu_info_from(ZEN3), GpuInfo("H100", True))
    assert resolve_engine("auto", gpu, "m.int8.onnx").engine == "pytorch"


def test_openvino_is_chosen_only_where_it_was_measured_fastest() -> None:
    spr_cpu, zen4_cpu = cpu_info_from(SAPPHIRE), cpu_info_from(ZEN4)
    spr = resolve_precision("auto", cpu=spr_cpu)
    chosen = resolve_engine("auto", spr, "m.int8.onnx", "m.onnx", spr_cpu, openvino=True)
    assert (chosen.engine, chosen.precision, chosen.onnx_path) == ("openvino", "auto", "m.onnx")
    assert resolve_engine("auto", spr, "m.int8.onnx", "m.onnx", spr_cpu, openvino=False).engine == "onnx"
    assert resolve_engine("auto", spr, "m.int8.onnx", None, spr_cpu, openvino=True).engine == "onnx"  # needs fp32
    zen4 = resolve_precision("auto", cpu=zen4_cpu)  # native bf16 without AMX: not measured, ONNX Runtime int8 stays
    assert resolve_engine("auto", zen4, "m.int8.onnx", "m.onnx", zen4_cpu, openvino=True).precision == "int8"
    forced = resolve_engine("openvino", resolve_precision("fp32", cpu=spr_cpu), None, "m.onnx", spr_cpu, True)
    assert (forced.engine, forced.precision) == ("openvino", "f32")
    fp32 = resolve_precision("fp32", cpu=spr_cpu)  # a forced precision: OpenVINO's bf16 is not what was asked
    assert resolve_engine("auto", fp32, "m.int8.onnx", "m.onnx", spr_cpu, openvino=True).precision == "int8"
    capped = dataclasses.replace(spr_cpu, onednn_max_isa="AVX2")  # oneDNN told not to use bf16
    assert resolve_engine("auto", spr, "m.int8.onnx", "m.onnx", capped, openvino=True).engine == "onnx"
    with pytest.raises(ValueError, match="not offered"):
        resolve_engine("openvino", resolve_precision("fp16", cpu=spr_cpu), None, "m.onnx", spr_cpu, True)
    with pytest.raises(ValueError, match="not installed"):
        resolve_engine("openvino", zen4, None, "m.onnx", zen4_cpu, openvino=False)
    with pytest.raises(ValueError, match="no fp32 ONNX export"):
        resolve_engine("openvino", zen4, "m.int8.onnx", None, zen4_cpu, openvino=True)


def test_threads_default_to_the_usable_cores() -> None:
    assert resolve_threads(None, cores=6).intra_op == 6
    assert resolve_threads(3, cores=6).intra_op == 3
    with pytest.raises(ValueError):
        resolve_threads(0)


def test_cpu_without_proc_cpuinfo_never_assumes_native_bf16() -> None:
    assert not cpu_info_from(None).native_bf16


def test_run_environment_names_the_choice(tmp_path: Path) -> None:
    from brain_tumor.hardware import describe_compute

    choice = resolve_precision("auto", cpu=CpuInfo("x", flags=frozenset({"avx2"})))
    out = describe_compute(choice, resolve_threads(2))
    assert out["precision"]["precision"] == "32-true" and out["threads"]["intra_op"] == 2
