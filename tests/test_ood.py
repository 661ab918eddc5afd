"""Out-of-distribution flag: kNN scores, thresholds, the refuse set, and the flag in predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brain_tumor.evaluation.ood import knn_scores, make_bank, refuse_set, threshold_for_rate
from brain_tumor.inference import Predictor
from tests.conftest import synthetic_slice


def test_knn_scores_near_zero_for_training_points_and_high_far_away() -> None:
    g = torch.Generator().manual_seed(0)
    train = torch.randn(200, 16, generator=g) + 5
    bank = make_bank(train)
    inside = knn_scores(bank, train[:20] + 0.01, k=1)
    outside = knn_scores(bank, -train[:20], k=1)
    assert inside.max() < 0.01 and outside.min() > 1.0


def test_threshold_flags_the_requested_share() -> None:
    scores = np.arange(1000, dtype=float)
    t = threshold_for_rate(scores, 0.05)
    assert abs((scores > t).mean() - 0.05) < 0.002


def test_refuse_set_has_every_kind() -> None:
    kinds = refuse_set()
    assert set(kinds) == {"natural_photo", "blank", "noise", "chest_xray_like"}
    assert all(len(v) >= 5 for v in kinds.values())
    assert all(im.ndim == 2 and 0 <= im.min() and im.max() <= 1 for v in kinds.values() for im in v)


@pytest.mark.slow
def test_fit_ood_stores_flag_used_by_predictions(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    from brain_tumor.onnx_runtime import file_sha256
    from brain_tumor.robustness import fit_ood

    checkpoint = Path(shutil.copy(tiny_checkpoint, tmp_path / "model.pt"))
    before = file_sha256(checkpoint)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(np.stack([synthetic_slice(rng, i % 3, 64) for i in range(60)])).unsqueeze(1)
    result = fit_ood(checkpoint, images, list(range(40)), list(range(40, 50)), list(range(50, 60)), tmp_path, 0.1, 3)
    assert file_sha256(checkpoint) == before and (tmp_path / "ood_bank.safetensors").is_file()
    assert (tmp_path / "ood.json").is_file() and (tmp_path / "ood.md").is_file()
    assert set(result["flag_rates"]["knn"]) >= {"val", "test", "blank", "noise", "all_must_refuse"}
    predictor = Predictor.from_checkpoint(checkpoint)
    assert predictor.ood is not None and predictor.ood["k"] == 3
    row = predictor.predict(rng.random((64, 64)).astype(np.float32)).row()
    assert "ood_score" in row and isinstance(row["out_of_distribution"], bool)
    if row["out_of_distribution"]:
        assert row["refer"]


def test_an_ood_bank_of_another_checkpoint_is_ignored(tiny_checkpoint: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    from brain_tumor.training.checkpoint import read_checkpoint, write_ood_companion

    checkpoint = Path(shutil.copy(tiny_checkpoint, tmp_path / "model.pt"))
    write_ood_companion(checkpoint, torch.randn(5, 8), method="knn-cosine", k=3, threshold=0.25, flag_rate=0.05,
                        fitted_on="validation slices")
    ood = read_checkpoint(checkpoint)["ood"]
    assert ood["k"] == 3 and ood["threshold"] == 0.25 and tuple(ood["bank"].shape) == (5, 8)
    payload = torch.load(checkpoint, weights_only=True)
    payload["epoch"] = 99  # another checkpoint in the same folder: the bank is not its own
    torch.save(payload, checkpoint)
    assert read_checkpoint(checkpoint)["ood"] is None
    assert "fitted on another checkpoint" in caplog.text


def test_cross_fitted_threshold_holds_where_the_validation_one_does_not() -> None:
    from brain_tumor.evaluation.ood_transfer import cross_fit_threshold, transfer_markdown

    rng = np.random.default_rng(0)
    # validation slices come from the training patients: closer to the bank than new patients are
    scores = {f: {"val": rng.normal(0.10, 0.02, 300), "test": rng.normal(0.20, 0.04, 600),
                  "photo": rng.normal(0.6, 0.05, 20)} for f in range(1, 6)}
    result = cross_fit_threshold(scores, 0.05)
    oof, val = result["summary"]["oof"], result["summary"]["val"]
    assert abs(oof["test_flagged_pooled"] - 0.05) < 0.015 and oof["mean_abs_error"] < 0.02
    assert val["test_flagged_pooled"] > 0.5  # the validation threshold flags most new patients
    assert all(r["oof"]["refuse_flagged"] == 1.0 for r in result["folds"])
    assert abs((np.concatenate([s["test"] for s in scores.values()]) > result["threshold"]).mean() - 0.05) < 0.002
    assert "| 3 | 600 |" in transfer_markdown(result, 10)
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_fit_threshold({1: scores[1]}, 0.05)


@pytest.mark.slow
def test_calibrate_fits_the_ood_threshold_on_fold_models_and_predict_uses_it(
        class_folder_dataset: Path, tmp_path: Path) -> None:
    import csv
    import json

    import yaml
    from typer.testing import CliRunner

    from brain_tumor.calibration_file import load_calibration
    from brain_tumor.cli import app
    from brain_tumor.config import RunConfig, to_dict
    from brain_tumor.data.manifest import CLASS_NAMES, load_records
    from brain_tumor.model import build_classifier, preprocessing_for
    from brain_tumor.onnx_runtime import file_sha256
    from brain_tumor.training.checkpoint import save_model_checkpoint, write_ood_companion

    records = load_records(str(class_folder_dataset))
    config = to_dict(RunConfig())
    config["data"].update(root=str(class_folder_dataset), image_size=32, cache_dir=str(tmp_path / "cache"))
    cv_dir, work = tmp_path / "cv", tmp_path / "runs"
    cv_dir.mkdir()
    (cv_dir / "config.yaml").write_text(yaml.safe_dump(config))
    folds = [list(range(f, len(records), 3)) for f in range(3)]
    splits = []
    for number, test in enumerate(folds, start=1):
        rest = [i for i in range(len(records)) if i not in test]
        splits.append({"name": f"fold{number}", "seed": 0, "train": rest[4:], "val": rest[:4], "test": test})
        torch.manual_seed(number)
        checkpoint = save_model_checkpoint(work / f"fold-{number}" / "model.pt", build_classifier("none", 3).eval(),
                                           architecture="resnet50-v1", class_names=list(CLASS_NAMES),
                                           preprocessing=preprocessing_for("keras", 32), config=config, epoch=0,
                                           metrics={})
        fold_dir = cv_dir / f"fold-{number}"
        fold_dir.mkdir()
        (fold_dir / "run.json").write_text(json.dumps({"checkpoint": {"file": "model.pt",
                                                                      "sha256": file_sha256(checkpoint)}}))
        with (fold_dir / "test_predictions.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "predicted", "p_glioma", "p_meningioma", "p_pituitary"])
            for i in test:
                writer.writerow([records[i].path, records[i].label, records[i].label, 0.8, 0.1, 0.1])
    (cv_dir / "splits.json").write_text(json.dumps(splits))
    # calibrate reads patients from the dataset's manifest: one patient per slice here
    with (class_folder_dataset / "manifest.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "label", "path", "patient_id", "cv_fold"])
        for i, r in enumerate(records):
            writer.writerow([i + 1, r.label, str(Path(r.path).relative_to(class_folder_dataset)), f"P{i}", 1])

    out = tmp_path / "out"
    args = ["calibrate", str(cv_dir), "--output", str(out), "--work-dir", str(work), "--flag-rate", "0.1", "--k", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "OOD threshold" in result.output and (out / "ood_scores" / "fold-2.json").is_file()
    summary = json.loads((out / "calibration_cv.json").read_text())
    assert [r["fold"] for r in summary["ood"]["folds"]] == [1, 2, 3]
    assert "Out-of-distribution threshold" in (out / "calibration_cv.md").read_text()
    calibration = load_calibration(out / "calibration.json")
    assert calibration["ood"]["k"] == 3 and calibration["ood"]["threshold"] == summary["ood"]["threshold"]
    assert calibration["ood"]["bank_size"] == 20 and calibration["ood"]["fitted_on"]["n_slices"] == 36
    cache = out / "ood_scores" / "fold-2.json"
    written = cache.stat().st_mtime_ns
    (out / "ood_scores" / "fold-1.json").write_text("{not json")  # a broken cache is computed again
    assert CliRunner().invoke(app, args).exit_code == 0
    assert cache.stat().st_mtime_ns == written  # the other folds' scores are reused
    assert json.loads((out / "ood_scores" / "fold-1.json").read_text())["k"] == 3

    # a fold model with its own detector takes the calibration's out-of-fold threshold
    fold_model = work / "fold-1" / "model.pt"
    write_ood_companion(fold_model, torch.randn(8, 2048), method="knn-cosine", k=3, threshold=9.0, flag_rate=0.1,
                        fitted_on="validation slices")
    predictor = Predictor.from_checkpoint(fold_model)
    assert predictor.ood is not None and predictor.ood["threshold"] == 9.0
    predictor.use_calibration(calibration, "calibration.json")
    assert predictor.ood["threshold"] == calibration["ood"]["threshold"]

    # a model that is not the one run.json names is refused in one line
    (work / "fold-3" / "model.pt").write_bytes(b"other")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "not the model that made fold-3's predictions" in result.output
