from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from brain_tumor.evaluation.trust import run_trust
from brain_tumor.inference import Predictor
from brain_tumor.model_loading import load_predictor
from brain_tumor.onnx_runtime import file_sha256
from tests.conftest import synthetic_slice


def _slices(seed: int, n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and uint8 ``[n, 1, 64, 64]`` synthetic slices, the three classes in turn."""
    rng = np.random.default_rng(seed)
    labels = torch.tensor([i % 3 for i in range(n)])
    return labels, torch.from_numpy(np.stack([synthetic_slice(rng, int(k), 64) for k in labels])).unsqueeze(1)


@pytest.mark.slow
def test_run_trust_writes_everything(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = Path(shutil.copy(tiny_checkpoint, tmp_path / "model.pt"))
    labels, images = _slices(seed=0)
    boxes = [(0.35, 0.35, 0.2, 0.2), (0.7, 0.5, 0.2, 0.2), (0.4, 0.7, 0.2, 0.2)] * 8
    run_dir = tmp_path / "run"
    classes = ("glioma", "meningioma", "pituitary")
    metrics = {"n_test": 12, "accuracy": 0.5, "macro_f1": 0.5, "macro_auc": 0.5,
               "confusion_matrix": np.eye(3).tolist(),
               **{k: {c: 0.5 for c in classes} for k in ("precision", "recall", "f1", "auc")}}
    run_dir.mkdir()
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    before = file_sha256(ckpt)
    result = run_trust(ckpt, run_dir, images, labels, boxes, list(range(12)), list(range(12, 24)))
    assert result["calibration"]["temperature"] > 0
    assert (run_dir / "trust" / "reliability.png").is_file() and (run_dir / "trust" / "model_card.md").is_file()
    assert "Not for diagnosis" in (run_dir / "trust" / "model_card.md").read_text()
    assert file_sha256(ckpt) == before  # the checkpoint is never rewritten
    assert Predictor.from_checkpoint(ckpt).temperature == 1.0
    predictor = load_predictor(ckpt, engine="pytorch")  # finds the calibration.json written beside it
    assert predictor.temperature == pytest.approx(result["calibration"]["temperature"])
    assert predictor.refer_threshold == pytest.approx(result["calibration"]["refer_threshold"])
    assert predictor.conformal is not None and predictor.calibration_source == str(tmp_path / "calibration.json")
    assert json.loads((run_dir / "trust" / "calibration.json").read_text())["fitted_on"]["source"] == "validation"


@pytest.mark.slow
def test_trust_keeps_an_out_of_fold_calibration_beside_the_model(tiny_checkpoint: Path, tmp_path: Path) -> None:
    ckpt = Path(shutil.copy(tiny_checkpoint, tmp_path / "model.pt"))
    labels, images = _slices(seed=1)
    run_trust(ckpt, tmp_path / "run", images, labels, [None] * 24, list(range(12)), list(range(12, 24)))
    beside = json.loads((tmp_path / "calibration.json").read_text())
    beside["fitted_on"] = {"source": "results/cv/some-recipe", "n_slices": 3064}
    beside["temperature"] = 1.2345
    (tmp_path / "calibration.json").write_text(json.dumps(beside))
    run_trust(ckpt, tmp_path / "run", images, labels, [None] * 24, list(range(12)), list(range(12, 24)))
    assert json.loads((tmp_path / "calibration.json").read_text())["temperature"] == 1.2345


@pytest.mark.slow
def test_trust_on_a_cv_fold_needs_the_fold(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from brain_tumor.cli import app

    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        Image.fromarray(synthetic_slice(rng, i % 3, 64)).save(tmp_path / f"{i}.png")
        rows.append(f"{i + 1},{('glioma', 'meningioma', 'pituitary')[i % 3]},{i}.png,p{i},,0.4,0.4,0.2,0.2")
    (tmp_path / "manifest.csv").write_text("index,label,path,patient_id,cv_fold,box_x_center,box_y_center,"
                                           "box_width,box_height\n" + "\n".join(rows) + "\n")
    meta = torch.load(tiny_checkpoint, weights_only=True)
    meta["config"]["data"].update(root=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    ckpt = tmp_path / "model.pt"
    torch.save(meta, ckpt)
    folds = [{"name": f"fold-{k}", "seed": 0, "train": [], "val": list(range(k, 12, 2))[:3],
              "test": list(range(k, 12, 2))[3:]} for k in (0, 1)]
    (tmp_path / "cv").mkdir()
    (tmp_path / "cv" / "splits.json").write_text(json.dumps(folds))
    run_dir = tmp_path / "cv" / "fold-2"
    run_dir.mkdir()
    classes = ("glioma", "meningioma", "pituitary")
    (run_dir / "metrics.json").write_text(json.dumps({
        "n_test": 3, "accuracy": 0.5, "macro_f1": 0.5, "macro_auc": 0.5, "confusion_matrix": np.eye(3).tolist(),
        **{k: {c: 0.5 for c in classes} for k in ("precision", "recall", "f1", "auc")}}))
    runner = CliRunner()
    refused = runner.invoke(app, ["trust", "-m", str(ckpt), "--run-dir", str(run_dir)])
    assert refused.exit_code == 2 and "split.json" in refused.output  # no paper split beside a CV fold
    refused = runner.invoke(app, ["trust", "-m", str(ckpt), "--run-dir", str(run_dir),
                                  "--split", str(tmp_path / "cv" / "splits.json")])
    assert refused.exit_code == 2 and "--fold" in refused.output
    done = runner.invoke(app, ["trust", "-m", str(ckpt), "--run-dir", str(run_dir), "--fold", "2"])
    assert done.exit_code == 0, done.output
    assert len(json.loads((run_dir / "trust" / "trust.json").read_text())["localisation"]["per_class"]) >= 1
    card = (run_dir / "trust" / "model_card.md").read_text()
    assert "patient-wise cross-validation" in card and "slice-level random split" not in card
    assert "## Context shortcut\nNot measured for this model" in card
