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
