from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from brain_tumor.export import OnnxPredictor, export_onnx
from brain_tumor.inference import Predictor


def test_onnx_parity(tiny_checkpoint: Path, tmp_path: Path) -> None:
    onnx_path = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    x = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    ours = predictor.logits(x).softmax(1).numpy()
    theirs = torch.from_numpy(OnnxPredictor(onnx_path).logits(x.numpy())).softmax(1).numpy()
    assert theirs.shape == (3, 3)
    assert np.abs(ours - theirs).max() < 1e-4


def test_int8_quantization_is_smaller_and_close(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from brain_tumor.export import quantize_int8

    fp32 = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    calibration = rng.integers(0, 256, (32, 1, 64, 64), dtype=np.uint8)
    int8 = quantize_int8(fp32, tmp_path / "m.int8.onnx", calibration)
    assert int8.stat().st_size < 0.4 * fp32.stat().st_size  # int8 weights: about a quarter of fp32
    x = rng.integers(0, 256, (8, 1, 64, 64), dtype=np.uint8)
    a, b = OnnxPredictor(fp32).logits(x), OnnxPredictor(int8).logits(x)
    assert b.shape == (8, 3) and np.isfinite(b).all()
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    import onnx

    graph = onnx.load(str(int8)).graph
    producers = {o: n for n in graph.node for o in n.output}
    def fed_by_dequantize(node: onnx.NodeProto) -> bool:
        return node.input[0] in producers and producers[node.input[0]].op_type == "DequantizeLinear"
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert not fed_by_dequantize(convs[0]) and all(fed_by_dequantize(c) for c in convs[1:])  # stem fp32
    adds = {n.output[0] for n in graph.node if n.op_type == "Add"}
    quantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    assert adds and not adds & quantized  # a residual sum is rounded only after its ReLU


def test_predictor_fast_paths_match_pytorch(tiny_checkpoint: Path, tmp_path: Path) -> None:
    onnx_path = export_onnx(tiny_checkpoint, tmp_path / "m.onnx")
    x = torch.randint(0, 256, (4, 1, 64, 64), dtype=torch.uint8)
    reference = Predictor.from_checkpoint(tiny_checkpoint).logits(x).softmax(1)
    via_onnx = Predictor.from_checkpoint(tiny_checkpoint).use_fast_path(onnx_path).logits(x).softmax(1)
    assert (via_onnx - reference).abs().max() < 1e-4
    via_bf16 = Predictor.from_checkpoint(tiny_checkpoint).use_fast_path(bf16=True).logits(x).softmax(1)
    assert via_bf16.dtype == torch.float32 and (via_bf16 - reference).abs().max() < 0.05
