"""The no-tumour gate, the source styles that control its shortcut, and their use in predict."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from brain_tumor.evaluation.external import outcome_rows, read_collection, summarise_collection
from brain_tumor.evaluation.no_tumour import cross_fit_no_tumour, group_folds, tumour_accuracy_with_gate
from brain_tumor.gate import TumourGate, fit_gate, load_gate
from brain_tumor.onnx_runtime import file_sha256
from brain_tumor.source_style import STYLES, head_mask, styled
from tests.conftest import synthetic_slice


def blobs(rng: np.random.Generator, n: int, shift: float) -> np.ndarray:
    return rng.normal(0, 1, (n, 16)) + shift * np.eye(16)[0]


def test_gate_separates_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    tumour, none = blobs(rng, 200, 0.0), blobs(rng, 200, 3.0)
    gate = fit_gate(np.concatenate([tumour, none]), np.r_[np.zeros(200), np.ones(200)], "abc")
    assert (gate.p_no_tumour(blobs(rng, 200, 3.0)) >= 0.5).mean() > 0.85
    assert (gate.p_no_tumour(blobs(rng, 200, 0.0)) >= 0.5).mean() < 0.15
    again = TumourGate.from_dict(json.loads(json.dumps(gate.to_dict())))
    x = blobs(rng, 5, 1.5)
    assert np.allclose(again.p_no_tumour(x), gate.p_no_tumour(x))
    for bad in ({}, {**gate.to_dict(), "threshold": 1.5}, {**gate.to_dict(), "scale": [0.0] * 16},
                {**gate.to_dict(), "coef": [1.0]}):
        with pytest.raises(ValueError):
            TumourGate.from_dict(bad)


def test_cross_fitting_keeps_groups_apart() -> None:
    rng = np.random.default_rng(1)
    groups = [f"g{i // 4}" for i in range(80)]  # 20 groups of 4 near-duplicates
    folds = group_folds(groups, 5, seed=0)
    for g in set(groups):
        assert len({folds[i] for i, h in enumerate(groups) if h == g}) == 1
    assert set(folds) == {1, 2, 3, 4, 5}
    p = cross_fit_no_tumour(blobs(rng, 100, 0.0), blobs(rng, 80, 3.0), folds, "abc", 0.5)
    assert p.shape == (80,) and (p >= 0.5).mean() > 0.8


def test_accuracy_with_gate_counts_gated_slices_wrong() -> None:
    labels = np.array([0, 1, 2, 0])
    probs = np.eye(3)[[0, 1, 2, 1]]  # 3 of 4 right
    result = tumour_accuracy_with_gate(labels, probs, np.array([0.9, 0.1, 0.1, 0.1]), 0.5, ["a", "b", "c", "d"])
    assert result["accuracy"] == 0.75 and result["accuracy_with_gate"] == 0.5
    assert result["called_no_tumour"] == 0.25 and result["difference"]["value"] == -0.25


def test_styles_keep_the_slice_and_change_its_look() -> None:
    rng = np.random.default_rng(2)
    x = synthetic_slice(rng, 1, size=96).astype(np.float32) / 255
    mask = head_mask(x)
    assert 0.2 < mask.mean() < 0.8
    for name in STYLES:
        y = styled(x, name, seed=3)
        assert np.isfinite(y).all() and 0 <= y.min() and y.max() <= 1
        assert np.array_equal(y, styled(x, name, seed=3))  # reproducible
        assert y.shape != x.shape or not np.allclose(y, x, atol=0.02)
    inverted = styled(x, "inverted-contrast", seed=0)
    assert inverted[~mask].max() == 0  # background kept dark
    assert np.corrcoef(inverted[mask], x[mask])[0, 1] < -0.5  # contrast inverted inside the head


def test_predict_answers_no_tumour_with_a_gate_beside_the_model(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from brain_tumor.answers import NO_TUMOUR
    from brain_tumor.cli import app
    from brain_tumor.model_loading import load_predictor

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model = shutil.copy(tiny_checkpoint, model_dir / "model.pt")
    sha = file_sha256(model)
    dim = 2048
    always = TumourGate(np.zeros(dim), np.ones(dim), np.zeros(dim), 5.0, 0.5, sha)  # P(no tumour) = 0.993
    (model_dir / "gate.json").write_text(json.dumps(always.to_dict()))
    images = tmp_path / "collection" / "no_tumor"
    images.mkdir(parents=True)
    rng = np.random.default_rng(4)
    for i in range(3):
        Image.fromarray(synthetic_slice(rng, 0, size=64)).save(images / f"{i}.png")
    result = CliRunner().invoke(app, ["predict", str(images), "-m", str(model), "--engine", "pytorch",
                                      "--csv", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [r["predicted"] for r in rows] == [NO_TUMOUR] * 3 and float(rows[0]["p_no_tumour"]) > 0.99

    predictor = load_predictor(model, engine="pytorch")
    items = read_collection(tmp_path / "collection")
    answers = list(predictor.predict_files([item.path for item in items]))
    summary = summarise_collection(items, answers, predictor.class_names)
    assert summary["no_tumour"]["called_no_tumour"] == 1.0 and summary["no_tumour"]["called_a_tumour"] == 0.0
    assert {r["outcome"] for r in outcome_rows(items, answers)} == {"called no tumour"}

    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({**always.to_dict(), "model_sha256": "0" * 64}))
    with pytest.raises(ValueError, match="another model"):
        load_predictor(model, engine="pytorch", gate=foreign)
    assert load_gate(model_dir / "gate.json").model_sha256 == sha


def test_a_package_carries_the_gate_and_the_calibration(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from brain_tumor.export import export_package
    from brain_tumor.model_loading import load_predictor

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model = shutil.copy(tiny_checkpoint, model_dir / "model.pt")
    gate = TumourGate(np.zeros(2048), np.ones(2048), np.zeros(2048), -5.0, 0.5, file_sha256(model))
    (model_dir / "gate.json").write_text(json.dumps(gate.to_dict()))
    package = export_package(model, tmp_path / "package")
    assert (package / "gate.json").is_file() and "gate.json" in (package / "SHA256SUMS").read_text()
    predictor = load_predictor(package, engine="pytorch")
    assert predictor.gate is not None and predictor.compute["gate"] == str(package / "gate.json")
    assert "p_no_tumour" in predictor.predict(np.zeros((64, 64), dtype=np.float32) + 0.5).extra


def test_the_service_reports_the_gate(tmp_path: Path, tiny_checkpoint: Path) -> None:
    import io

    from fastapi.testclient import TestClient

    from brain_tumor.serve.app import ServiceSettings, create_app

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model = shutil.copy(tiny_checkpoint, model_dir / "model.pt")
    always = TumourGate(np.zeros(2048), np.ones(2048), np.zeros(2048), 5.0, 0.5, file_sha256(model))
    (model_dir / "gate.json").write_text(json.dumps(always.to_dict()))
    buffer = io.BytesIO()
    Image.fromarray(synthetic_slice(np.random.default_rng(5), 0, size=64)).save(buffer, "PNG")
    with TestClient(create_app(ServiceSettings(model))) as client:
        body = client.post("/v1/predict", files={"file": ("s.png", buffer.getvalue(), "image/png")}).json()
        assert body["predicted"] == "no_tumour" and body["p_no_tumour"] > 0.99 and body["calibrated"] is False
        assert body["prediction_set"] is None
        study = client.post("/v1/study", files=[("files", (f"{i}.png", buffer.getvalue(), "image/png"))
                                                 for i in range(2)]).json()
        assert study["study"]["predicted"] == "no_tumour" and study["study"]["confidence"] == 1.0
        assert client.get("/v1/health").json()["compute"]["gate"].endswith("gate.json")


def _head(size: int, tumour: bool, rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    yy, xx = np.mgrid[:size, :size] / size
    image = np.where((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.16, 0.3, 0.0) + rng.normal(0, 0.02, (size, size))
    y, x = int(rng.integers(18, 34)), int(rng.integers(18, 34))
    if tumour:
        image[y:y + 10, x:x + 10] = 0.95
    return np.clip(image, 0, 1), ((x + 5) / size, (y + 5) / size, 10 / size, 10 / size)


def test_gate_learns_from_erased_tumours_when_asked(tmp_path: Path, tiny_checkpoint: Path) -> None:
    import torch

    from brain_tumor.cli import app
    from brain_tumor.data.manifest import FIELDS
    from brain_tumor.no_tumour_gate import ERASED

    rng = np.random.default_rng(0)
    data, none = tmp_path / "tumours", tmp_path / "none"
    data.mkdir()
    none.mkdir()
    rows = []
    for i in range(30):
        image, box = _head(64, True, rng)
        Image.fromarray((255 * image).astype(np.uint8)).save(data / f"{i}.png")
        rows.append([i + 1, ["glioma", "meningioma", "pituitary"][i % 3], f"{i}.png", f"p{i // 2}", "", *box])
    (data / "manifest.csv").write_text(",".join(FIELDS) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    with (none / "manifest.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "group"])
        for i in range(20):
            Image.fromarray((255 * _head(64, False, rng)[0]).astype(np.uint8)).save(none / f"n{i}.png")
            writer.writerow([f"n{i}.png", "no_tumour", f"g{i // 2}"])
    meta = torch.load(tiny_checkpoint, weights_only=True)
    meta["config"]["data"]["root"] = str(data)
    checkpoint = tmp_path / "model.pt"
    torch.save(meta, checkpoint)
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps([{"name": "fold-1", "seed": 0, "train": list(range(18)), "val": [18, 19],
                                   "test": list(range(20, 30))}]))
    out = tmp_path / "gate"
    result = CliRunner().invoke(app, ["no-tumour-gate", "-m", str(checkpoint), "--split", str(splits), "--fold", "1",
                                      "--data", str(data), "--no-tumour-data", str(none), "--output", str(out),
                                      "--per-class", "10", "--erased-negatives"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "no_tumour.json").read_text())
    assert summary["deployed"] == ERASED and list(summary["results"])[0] == ERASED
    counts = summary["erased_negatives"]
    assert 0 < counts["train_erased"] == counts["train_control"] <= 20 and counts["test_erased"] == 10
    for variant in summary["results"].values():
        shares = variant["tumour_erased_test_called_no_tumour"]
        assert set(shares) == {"glioma", "meningioma", "pituitary"} and all(0 <= v <= 1 for v in shares.values())
    assert "held-out eraser (inpaint)" in (out / "no_tumour.md").read_text()
    assert load_gate(out / "gate.json").model_sha256 == file_sha256(checkpoint)


def test_features_stay_aligned_with_their_paths_when_some_are_skipped(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from brain_tumor.evaluation.no_tumour import features_of, style_renderer
    from brain_tumor.inference import Predictor

    rng = np.random.default_rng(3)
    paths = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray(synthetic_slice(rng, i % 3)).save(path)
        paths.append(path)
    paths[1].write_bytes(b"\x89PNG\r\n\x1a\n broken")  # unreadable: logged and masked out
    predictor = Predictor.from_checkpoint(tiny_checkpoint)

    def skip_third(i: int, image: np.ndarray) -> np.ndarray | None:
        return None if i == 2 else image

    feats, probs, ok = features_of(predictor, paths, skip_third, "test")
    assert ok.tolist() == [True, False, False, True] and len(feats) == len(probs) == 4
    alone, _, _ = features_of(predictor, [paths[3]], style_renderer(None, 0), "test")
    assert np.allclose(feats[3], alone[0], rtol=1e-3, atol=1e-3)  # batch size moves the last digits
    assert not feats[1].any()
