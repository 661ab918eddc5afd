"""OpenVINO inference over the same ONNX export ONNX Runtime runs (see :mod:`brain_tumor.export`).

OpenVINO is Intel's CPU inference engine. Its CPU plugin runs an fp32 graph in bf16 where the CPU
has native bf16 (its default ``INFERENCE_PRECISION_HINT``), which on a CPU with AMX measured
2.9x the throughput of ONNX Runtime int8 on the same export and cores
(``results/bench/openvino-*.json``, ``bench/openvino_engine.py``). It is a dependency of the tool;
:func:`openvino_available` lets an install without it fall back to ONNX Runtime.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brain_tumor.export_outputs import ExportOutputs

PRECISION_HINTS = {"32-true": "f32", "bf16-mixed": "bf16"}  # a precision the user forced -> OpenVINO's hint


def openvino_available() -> bool:
    """Whether the ``openvino`` package is installed (without importing it)."""
    return importlib.util.find_spec("openvino") is not None


class OpenVinoPredictor(ExportOutputs):
    """An OpenVINO CPU model compiled from an ONNX export: uint8 slices in, logits (and the
    penultimate features and tumour evidence, for exports that carry them) out; the same interface as
    :class:`~brain_tumor.onnx_runtime.OnnxPredictor`.

    ``precision_hint`` (``f32`` or ``bf16``) overrides OpenVINO's own choice, which is bf16 where
    the CPU has it natively and f32 elsewhere. One infer request under a lock: OpenVINO's requests
    are not safe to share between threads, and one request on every core is its fastest way to
    run a batch (the LATENCY hint)."""

    def __init__(self, path: str | Path, threads: int | None = None, precision_hint: str | None = None) -> None:
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if precision_hint:
            config["INFERENCE_PRECISION_HINT"] = precision_hint
        self.path = Path(path)
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.output_names = [name for output in self.compiled.outputs for name in output.get_names()]
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type: f32 or bf16
        self.inference_precision = str(hint.get_type_name() if hasattr(hint, "get_type_name") else hint)
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()

    def run(self, images_uint8: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The outputs ``names`` (of :attr:`output_names`) for uint8 ``[B, 1, S, S]``; copied out
        under the lock, since the request's buffers are reused by the next call."""
        x = images_uint8.astype(np.float32) / 255.0
        with self._lock:
            result = self._request.infer({"image": x})
            return {name: np.array(result[self.compiled.output(name)]) for name in names}
