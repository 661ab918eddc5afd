"""ONNX export of a checkpoint (normalisation included) and ONNX Runtime inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from brain_tumor.inference import Predictor
from brain_tumor.transforms import Normalize


class ExportWrapper(nn.Module):
    """float ``[B, 1, S, S]`` in [0, 1] -> logits, with the weights' normalisation inside."""

    def __init__(self, network: nn.Module, normalize: Normalize) -> None:
        super().__init__()
        self.network, self.normalize = network, normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.normalize(x))


def export_onnx(checkpoint: str | Path, output: str | Path, opset: int = 17) -> Path:
    """Write an ONNX model with a dynamic batch axis; input ``image`` float [B, 1, S, S] in [0, 1]."""
    predictor = Predictor.from_checkpoint(checkpoint)
    wrapper = ExportWrapper(predictor.network, predictor.normalize).eval()
    size = predictor.preprocessing.image_size
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(wrapper, (torch.rand(1, 1, size, size),), str(output), input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=opset, dynamo=False)
    return output


class OnnxPredictor:
    """ONNX Runtime session over an exported model."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def logits(self, images_uint8: np.ndarray) -> np.ndarray:
        """Logits for uint8 ``[B, 1, S, S]``."""
        x = images_uint8.astype(np.float32) / 255.0
        return np.asarray(self.session.run(["logits"], {"image": x})[0])


def quantize_int8(fp32_onnx: str | Path, output: str | Path, calibration_uint8: np.ndarray,
                  keep_stem_fp32: bool = True) -> Path:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on ``calibration_uint8``.

    Calibration images set activation ranges only (no labels): take them from training data.
    ``keep_stem_fp32`` leaves the first convolution unquantized: its caffe-scale inputs and
    outputs are where low precision costs accuracy (as with bf16). Only convolutions and the
    classifier run in int8; each residual sum and its ReLU stay fp32 and are rounded after the
    ReLU, so the 8 bits are not spent on negative sums the ReLU then discards.
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration_uint8) == 0:
        raise ValueError("int8 quantization needs calibration images")

    class Reader(CalibrationDataReader):
        """The calibration images, 16 at a time, as the exported model's float input."""

        def __init__(self) -> None:
            self.batches = iter([calibration_uint8[i:i + 16] for i in range(0, len(calibration_uint8), 16)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            chunk = next(self.batches, None)
            return None if chunk is None else {"image": chunk.astype(np.float32) / 255.0}

    reader = Reader()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_onnx), str(prepared))
        convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
        quantize_static(str(prepared), str(output), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "Gemm"],
                        nodes_to_exclude=convs[:1] if keep_stem_fp32 else [])
    return output
