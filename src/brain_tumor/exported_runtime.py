"""The runtime of an exported ONNX model that an :class:`~brain_tumor.hardware.EngineChoice` names."""

from __future__ import annotations

from brain_tumor.engine_choice import EngineChoice
from brain_tumor.onnx_runtime import OnnxPredictor
from brain_tumor.openvino_runtime import OpenVinoPredictor

ExportedModel = OnnxPredictor | OpenVinoPredictor  # both brain_tumor.export_outputs.ExportOutputs


def open_export(engine: EngineChoice, threads: int | None = None) -> ExportedModel | None:
    """ONNX Runtime or OpenVINO over the chosen export, on ``threads`` intra-op threads; None for
    the PyTorch engine. OpenVINO's precision is its own choice unless the engine names one."""
    if not engine.onnx_path:
        return None
    if engine.engine == "onnx":
        return OnnxPredictor(engine.onnx_path, threads)
    if engine.engine == "openvino":
        return OpenVinoPredictor(engine.onnx_path, threads, None if engine.precision == "auto" else engine.precision)
    return None
