from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from brain_tumor.evaluation.trust import run_trust
from brain_tumor.inference import Predictor
from tests.conftest import synthetic_slice


@pytest.mark.slow
def test_run_trust_writes_everything(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = Path(shutil.copy(tiny_checkpoint, tmp_path / "model.pt"))
    rng = np.random.default_rng(0)
    labels = torch.tensor([i % 3 for i in range(24)])
    images = torch.from_numpy(np.stack([synthetic_slice(rng, int(k), 64) for k in labels])).unsqueeze(1)
    boxes = [(0.35, 0.35, 0.2, 0.2), (0.7, 0.5, 0.2, 0.2), (0.4, 0.7, 0.2, 0.2)] * 8
    run_dir = tmp_path / "run"
    classes = ("glioma", "meningioma", "pituitary")
    metrics = {"n_test": 12, "accuracy": 0.5, "macro_f1": 0.5, "macro_auc": 0.5,
               "confusion_matrix": np.eye(3).tolist(),
               **{k: {c: 0.5 for c in classes} for k in ("precision", "recall", "f1", "auc")}}
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    result = run_trust(ckpt, run_dir, images, labels, boxes, list(range(12)), list(range(12, 24)))
    assert result["calibration"]["temperature"] > 0
    assert (run_dir / "trust" / "reliability.png").is_file() and (run_dir / "trust" / "model_card.md").is_file()
    assert "Not for diagnosis" in (run_dir / "trust" / "model_card.md").read_text()
    assert Predictor.from_checkpoint(ckpt).temperature == result["calibration"]["temperature"]
