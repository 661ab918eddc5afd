"""Conformal sets and calibration fitted on out-of-fold predictions."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from brain_tumor.calibrate import CalibrationInputError, read_out_of_fold, run_calibrate
from brain_tumor.calibration_file import load_calibration
from brain_tumor.evaluation.calibration import expected_calibration_error
from brain_tumor.evaluation.conformal import ConformalSets, coverage, set_names
from brain_tumor.evaluation.oof_calibration import OutOfFold, cross_fit

CLASSES = ["glioma", "meningioma", "pituitary"]


def overconfident(rng: np.random.Generator, n: int, sharpness: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities from a model that is right ~85% of the time but sharpened by
    ``sharpness`` (over-confident), with a harder class 1."""
    labels = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), labels] += np.where(labels == 1, 1.2, 2.2)
    z = sharpness * logits
    probs = np.exp(z - z.max(1, keepdims=True))
    return labels, probs / probs.sum(1, keepdims=True)


def test_sets_reach_the_stated_coverage_per_class() -> None:
    rng = np.random.default_rng(0)
    y_cal, p_cal = overconfident(rng, 3000)
    y_test, p_test = overconfident(rng, 3000)
    sets = ConformalSets.fit(p_cal, y_cal).sets(p_test, 0.9)
    assert abs(coverage(sets, y_test) - 0.9) < 0.02
    for k in range(3):  # label-conditional: each class, the hard one too
        assert abs(coverage(sets[y_test == k], y_test[y_test == k]) - 0.9) < 0.035
    # the top-1 answer alone covers less than 90% here, so sets must sometimes hold two classes
    assert (p_test.argmax(1) == y_test).mean() < 0.9 < coverage(sets, y_test) + 0.02
    assert sets.sum(1).max() >= 2


def test_higher_confidence_gives_larger_sets_and_marginal_differs() -> None:
    rng = np.random.default_rng(1)
    y, p = overconfident(rng, 1500)
    conformal = ConformalSets.fit(p, y)
    assert conformal.sets(p, 0.99).sum() > conformal.sets(p, 0.8).sum()
    marginal = ConformalSets.fit(p, y, class_conditional=False)
    assert not np.array_equal(marginal.p_values(p), conformal.p_values(p))
    with pytest.raises(ValueError, match="confidence"):
        conformal.sets(p, 1.0)


def test_round_trip_and_malformed() -> None:
    rng = np.random.default_rng(2)
    y, p = overconfident(rng, 300)
    conformal = ConformalSets.fit(p, y)
    again = ConformalSets.from_dict(json.loads(json.dumps(conformal.to_dict())))
    assert np.array_equal(again.sets(p, 0.95), conformal.sets(p, 0.95))
    assert set_names(np.array([[True, False, True], [False] * 3]), CLASSES) == [["glioma", "pituitary"], []]
    for bad in ({}, {"scores": [0.1], "labels": [5], "n_classes": 3}, {"scores": [0.1, "x"], "labels": [0, 1],
                                                                         "n_classes": 3}):
        with pytest.raises(ValueError):
            ConformalSets.from_dict(bad)
    with pytest.raises(ValueError, match="every class"):
        ConformalSets.fit(p[y != 2], y[y != 2])


def test_cross_fitting_calibrates_an_overconfident_model() -> None:
    rng = np.random.default_rng(3)
    y, p = overconfident(rng, 2500)
    oof = OutOfFold(p, y, np.arange(len(y)) % 5 + 1, np.asarray([str(i // 10) for i in range(len(y))]))
    result = cross_fit(oof, target_risk=0.05, confidence=0.9)
    assert expected_calibration_error(result.scaled, y) < expected_calibration_error(p, y) / 2
    assert abs(coverage(result.members, y) - 0.9) < 0.03
    answered = result.answered
    assert 0.2 < answered.mean() < 1
    assert (result.scaled.argmax(1) == y)[answered].mean() > (result.scaled.argmax(1) == y).mean()
    assert [f["fold"] for f in result.per_fold] == [1, 2, 3, 4, 5]


def fake_cv(root: Path, data: Path, folds: list[list[int]], y: np.ndarray, p: np.ndarray,
            patients: list[str], config: dict | None = None) -> Path:
    """A CV results folder and the manifest of the dataset it names, as `brain-tumor cv` writes them."""
    data.mkdir(parents=True)
    with (data / "manifest.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "label", "path", "patient_id", "cv_fold"])
        for i, (label, patient) in enumerate(zip(y, patients)):
            writer.writerow([i + 1, CLASSES[label], f"{CLASSES[label]}/{i + 1}.png", patient, 1])
    root.mkdir(parents=True)
    config = config or {"data": {"image_size": 64}}
    (root / "config.yaml").write_text(yaml.safe_dump({**config, "data": {**config.get("data", {}), "root": str(data)}}))
    for number, rows in enumerate(folds, start=1):
        (root / f"fold-{number}").mkdir()
        with (root / f"fold-{number}" / "test_predictions.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "predicted", *[f"p_{c}" for c in CLASSES]])
            for i in rows:
                writer.writerow([f"/elsewhere/{CLASSES[y[i]]}/{i + 1}.png", CLASSES[y[i]], CLASSES[p[i].argmax()],
                                 *p[i]])
    return root


def test_calibrate_a_cv_folder_and_predict_with_it(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from brain_tumor.cli import app

    rng = np.random.default_rng(4)
    y, p = overconfident(rng, 600)
    patients = [f"P{i // 6}" for i in range(600)]  # 100 patients, 6 slices each; folds by patient
    folds = [[i for i in range(600) if (i // 6) % 4 == k] for k in range(4)]
    recipe = torch.load(tiny_checkpoint, weights_only=True)["config"]  # the CV of the model's own recipe
    recipe["data"]["image_size"] = 64  # what the tiny model reads
    cv_dir = fake_cv(tmp_path / "cv", tmp_path / "data", folds, y, p, patients, recipe)
    oof, size = read_out_of_fold(cv_dir)
    assert size == 64 and len(oof.labels) == 600 and len(set(oof.folds)) == 4

    result = CliRunner().invoke(app, ["calibrate", str(cv_dir), "--output", str(tmp_path / "out"),
                                      "--confidence", "0.9"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "calibration_cv.json").read_text())
    assert summary["ece_after"]["value"] < summary["ece_before"]["value"]
    assert summary["n_patients"] == 100 and len(summary["folds"]) == 4
    assert (tmp_path / "out" / "reliability.png").stat().st_size > 0
    calibration = load_calibration(tmp_path / "out" / "calibration.json")
    assert calibration["confidence"] == 0.9 and calibration["fitted_on"]["n_slices"] == 600

    # predict picks up a calibration.json beside the model and prints / writes the sets
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(tiny_checkpoint, model_dir / "model.pt")
    shutil.copy(tmp_path / "out" / "calibration.json", model_dir / "calibration.json")
    image = tmp_path / "slice.png"
    from PIL import Image

    from tests.test_scope import head

    Image.fromarray((head(64) * 255).astype(np.uint8)).save(image)  # MRI-like, so not refused as out of scope
    result = CliRunner().invoke(app, ["predict", str(image), "-m", str(model_dir / "model.pt"), "--engine", "pytorch",
                                      "--csv", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    assert "set@90%" in result.output
    row = next(csv.DictReader((tmp_path / "p.csv").open()))
    assert set(row["prediction_set"].split("|")) <= set(CLASSES) and row["calibrated"] == "True"

    # a calibration fitted on the CV of another recipe is refused, saying which settings differ
    other = json.loads((model_dir / "calibration.json").read_text())
    other["recipe"]["train.counterfactual"] = 0.2
    (model_dir / "calibration.json").write_text(json.dumps(other))
    result = CliRunner().invoke(app, ["predict", str(image), "-m", str(model_dir / "model.pt"), "--engine", "pytorch"])
    assert result.exit_code == 2 and "another recipe: train.counterfactual=0.2 (this model: 0.0)" in result.output


def test_patient_overlap_and_bad_files_are_refused(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from brain_tumor.model_loading import load_predictor

    rng = np.random.default_rng(5)
    y, p = overconfident(rng, 60)
    patients = [f"P{i // 6}" for i in range(60)]
    leaky = [list(range(0, 33)), list(range(33, 60))]  # patient P5 (slices 30-35) in both folds
    cv_dir = fake_cv(tmp_path / "cv", tmp_path / "data", leaky, y, p, patients)
    with pytest.raises(CalibrationInputError, match="share patients"):
        run_calibrate(cv_dir, tmp_path / "out")
    with pytest.raises(CalibrationInputError, match="at least 2"):
        read_out_of_fold(tmp_path)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "brain-tumor-calibration/1", "temperature": -1, "refer_threshold": 0.5,
                               "confidence": 0.9, "class_names": CLASSES, "conformal": {}}))
    with pytest.raises(ValueError, match="temperature"):
        load_calibration(bad)
    other = tmp_path / "other.json"
    conformal = ConformalSets.fit(p[:, :2] / p[:, :2].sum(1, keepdims=True), (y > 0).astype(int))
    other.write_text(json.dumps({"format": "brain-tumor-calibration/1", "temperature": 1.0, "refer_threshold": 0.5,
                                 "confidence": 0.9, "class_names": ["tumour", "none"], "image_size": 64,
                                 "conformal": conformal.to_dict()}))
    with pytest.raises(ValueError, match="calibrated for classes"):
        load_predictor(tiny_checkpoint, engine="pytorch", calibration=other)


def test_the_service_reports_the_applied_calibration(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from fastapi.testclient import TestClient

    from brain_tumor.serve.app import ServiceSettings, create_app

    rng = np.random.default_rng(6)
    y, p = overconfident(rng, 300)
    calibration = {"format": "brain-tumor-calibration/1", "temperature": 1.7, "refer_threshold": 0.6,
                   "confidence": 0.9, "class_names": CLASSES, "image_size": 64,
                   "conformal": ConformalSets.fit(p, y).to_dict()}
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(calibration))
    with TestClient(create_app(ServiceSettings(tiny_checkpoint, calibration=path))) as client:
        applied = client.get("/v1/model").json()["calibration"]
        assert applied["temperature"] == 1.7 and applied["set_confidence"] == 0.9
        assert applied["source"] == str(path)
