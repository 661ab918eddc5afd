"""The tumour map (issue 22): a head that finds tumour tissue cell by cell, and the "no tumour"
answer it gives when it finds none."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from brain_tumor.answers import NO_TUMOUR, no_tumour_answer
from brain_tumor.cli import app
from brain_tumor.config import RunConfig, to_dict
from brain_tumor.data.counterfactual import ERASED
from brain_tumor.inference import Predictor
from brain_tumor.model import (
    add_tumour_map,
    build_classifier,
    freeze_first_keras_layers,
    has_tumour_map,
    stage_features_fp32_stem,
    tumour_evidence,
    tumour_map_logits,
)
from brain_tumor.model.backbone import preprocessing_for
from brain_tumor.model_loading import load_predictor
from brain_tumor.training.checkpoint import load_checkpoint, save_model_checkpoint
from brain_tumor.training.losses import tumour_map_loss
from brain_tumor.training.module import SliceClassifier
from brain_tumor.tumour_evidence import answer_metrics, evidence_record, evidence_threshold
from tests.conftest import synthetic_slice, tiny_run_settings

CLASSES = ["glioma", "meningioma", "pituitary"]


def _masks(rows: int, size: int = 64, inside: tuple[slice, slice] = (slice(16, 32), slice(16, 32))) -> torch.Tensor:
    masks = torch.zeros(rows, 1, size, size, dtype=torch.uint8)
    masks[:, 0, inside[0], inside[1]] = 1
    return masks


def _map(on_tumour: float, elsewhere: float, rows: int = 2) -> torch.Tensor:
    """Map logits on a 4 x 4 grid of a 64 px slice: ``on_tumour`` over the mask of :func:`_masks`
    (cell 1..1 of the grid), ``elsewhere`` on every other cell."""
    logits = torch.full((rows, 1, 4, 4), elsewhere)
    logits[:, 0, 1, 1] = on_tumour
    return logits


def test_the_loss_rewards_finding_the_tumour_where_it_is_and_nowhere_else() -> None:
    masks, kept = _masks(2), torch.zeros(2, dtype=torch.bool)
    right = tumour_map_loss(_map(4.0, -4.0), masks, kept)
    assert right < tumour_map_loss(_map(-4.0, -4.0), masks, kept)  # missed the tumour
    assert right < tumour_map_loss(_map(4.0, 4.0), masks, kept)  # tumour everywhere
    assert right < tumour_map_loss(_map(-4.0, 4.0), masks, kept)  # everywhere but the tumour


def test_an_erased_tumour_must_be_found_nowhere_even_where_its_box_was() -> None:
    masks, erased = _masks(2), torch.ones(2, dtype=torch.bool)
    nowhere = tumour_map_loss(_map(-4.0, -4.0), masks, erased)
    assert nowhere < tumour_map_loss(_map(4.0, -4.0), masks, erased)  # found at the erased box
    assert nowhere < 0.05


def test_slices_without_a_box_are_left_out_and_gradients_reach_only_the_others() -> None:
    masks = _masks(3)
    masks[2] = 0  # no box known, not erased
    erased = torch.tensor([False, True, False])
    logits = _map(0.0, 0.0, rows=3).requires_grad_()
    tumour_map_loss(logits, masks, erased).backward()
    assert logits.grad is not None
    assert logits.grad[2].abs().sum() == 0 and logits.grad[:2].abs().sum() > 0
    none = tumour_map_loss(_map(3.0, 3.0, rows=1), _masks(1) * 0, torch.zeros(1, dtype=torch.bool))
    assert none.item() == 0.0


def test_the_head_sits_on_the_third_stage_and_starts_from_a_low_prior() -> None:
    network = add_tumour_map(build_classifier("none", 3)).eval()
    assert has_tumour_map(network) and not has_tumour_map(build_classifier("none", 3))
    with torch.no_grad():
        third, last = stage_features_fp32_stem(network, torch.zeros(2, 3, 64, 64))
        map_logits = tumour_map_logits(network, third)
    assert third.shape == (2, 1024, 4, 4) and last.shape == (2, 2048, 2, 2) and map_logits.shape == (2, 1, 4, 4)
    assert float(tumour_evidence(map_logits).max()) < 0.05


def _module(weight: float, smoothing: float = 0.0) -> SliceClassifier:
    torch.manual_seed(0)
    network = build_classifier("none", 3)
    freeze_first_keras_layers(network, 15)
    if weight > 0:
        add_tumour_map(network)
    return SliceClassifier(network, preprocessing_for("none", 64), channels_last=False, label_smoothing=smoothing,
                           tumour_map=weight)


# the shared path (no smoothing, or smoothing with an erased slice) and the smoothed one (_train_step)
@pytest.mark.parametrize(("smoothing", "erased"), [(0.0, True), (0.1, True), (0.1, False)])
def test_the_training_loss_adds_the_weighted_map_loss_and_validation_ignores_it(smoothing: float,
                                                                                erased: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 255, (4, 1, 64, 64), dtype=torch.uint8, generator=generator)
    labels = torch.tensor([0, 1, ERASED if erased else 1, 2])
    masks = _masks(4)
    plain, mapped = _module(0.0, smoothing).eval(), _module(3.0, smoothing).eval()
    mapped.network.load_state_dict(plain.network.state_dict(), strict=False)  # same classifier, plus a head
    with torch.no_grad():
        third, _ = stage_features_fp32_stem(mapped.network, mapped.normalize(images))
        map_loss = tumour_map_loss(tumour_map_logits(mapped.network, third), masks, labels == ERASED).item()
        base = plain.training_step((images, labels, masks), 0).item()
        assert map_loss > 0
        assert mapped.training_step((images, labels, masks), 0).item() == pytest.approx(base + 3.0 * map_loss,
                                                                                       rel=1e-4)
        assert mapped._step((images, labels, masks), "val").item() == pytest.approx(
            plain._step((images, labels), "val").item(), rel=1e-5)
    with pytest.raises(ValueError, match="tumour map"):
        SliceClassifier(build_classifier("none", 3), preprocessing_for("none", 64), tumour_map=1.0)


def test_the_map_loss_trains_the_head_and_leaves_the_classifier_alone() -> None:
    module = _module(1.0).train()
    images = torch.randint(0, 255, (2, 1, 64, 64), dtype=torch.uint8)
    module._classify_with_penalty(module.normalize(images), _masks(2), torch.tensor([0, ERASED]))[1].backward()
    assert module.network.tumour_map.weight.grad.abs().sum() > 0  # type: ignore[union-attr]
    assert module.network.fc.weight.grad is None  # the classifier is not on the map's path


def test_the_threshold_is_the_low_quantile_of_validation_evidence() -> None:
    scores = np.linspace(0.0, 1.0, 101)
    assert evidence_threshold(scores, 0.01) == pytest.approx(0.01)
    assert evidence_threshold(scores, 0.0) == 0.0
    record = evidence_record(scores)
    assert record["threshold"] == pytest.approx(0.01) and "101" in record["fitted_on"]
    with pytest.raises(ValueError, match="no validation slice"):
        evidence_threshold(np.array([]))


def _checkpoint(tmp_path: Path, bias: float, threshold: float = 0.5) -> Path:
    torch.manual_seed(0)
    network = add_tumour_map(build_classifier("none", 3)).eval()
    with torch.no_grad():
        network.tumour_map.weight.zero_()  # type: ignore[union-attr, operator]
        network.tumour_map.bias.fill_(bias)  # type: ignore[union-attr, operator]
    return save_model_checkpoint(tmp_path / f"model-{bias}.pt", network, architecture="resnet50-v1",
                                 class_names=CLASSES, preprocessing=preprocessing_for("none", 64),
                                 config=to_dict(RunConfig()), epoch=0, metrics={},
                                 extra={"tumour_evidence": {"threshold": threshold, "quantile": 0.01}})


def test_a_slice_without_tumour_evidence_is_answered_no_tumour(tmp_path: Path) -> None:
    image = synthetic_slice(np.random.default_rng(0), 1, 64) / 255.0
    empty = Predictor.from_checkpoint(_checkpoint(tmp_path, bias=-6.0)).predict(image)
    assert empty.predicted == NO_TUMOUR and empty.extra["tumour_evidence"] < 0.01
    assert empty.confidence == pytest.approx(1 - empty.extra["tumour_evidence"], abs=1e-5)
    assert empty.extra["no_tumour_from"] == "tumour_map" and "no_tumour_from" not in found_extra(tmp_path, image)
    found = Predictor.from_checkpoint(_checkpoint(tmp_path, bias=6.0)).predict(image)
    assert found.predicted in CLASSES and found.extra["tumour_evidence"] > 0.99
    assert found.probabilities == pytest.approx(empty.probabilities)  # same classifier: only the answer differs


def found_extra(tmp_path: Path, image: np.ndarray) -> dict[str, object]:
    return Predictor.from_checkpoint(_checkpoint(tmp_path, bias=6.0)).predict(image).extra


def test_predict_writes_the_evidence_column(tmp_path: Path) -> None:
    image = tmp_path / "slice.png"
    Image.fromarray(synthetic_slice(np.random.default_rng(0), 1, 64)).save(image)
    out = tmp_path / "predictions.csv"
    result = CliRunner().invoke(app, ["predict", str(image), "-m", str(_checkpoint(tmp_path, bias=-6.0)),
                                      "--csv", str(out), "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    header, row = out.read_text().splitlines()[:2]
    assert {"tumour_evidence", "no_tumour_from"} <= set(header.split(","))
    values = dict(zip(header.split(","), row.split(",")))
    assert values["predicted"] == NO_TUMOUR and float(values["tumour_evidence"]) < 0.01
    assert values["no_tumour_from"] == "tumour_map"


def test_a_package_keeps_the_threshold(tmp_path: Path) -> None:
    from brain_tumor.export import export_package

    package = tmp_path / "package"
    export_package(_checkpoint(tmp_path, bias=-6.0, threshold=0.25), package)
    predictor = Predictor.from_checkpoint(package)
    assert predictor.evidence_record is not None and predictor.evidence_record["threshold"] == 0.25
    assert "0.2500" in (package / "model_card.md").read_text()
    image = synthetic_slice(np.random.default_rng(0), 1, 64) / 255.0
    assert predictor.predict(image).extra["no_tumour_from"] == "tumour_map"


def test_the_map_travels_in_the_checkpoint_and_old_exports_are_not_used(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = _checkpoint(tmp_path, bias=1.0)
    checkpoint = load_checkpoint(path)
    assert has_tumour_map(checkpoint.build()) and checkpoint.meta["tumour_evidence"]["threshold"] == 0.5
    exports = (str(tmp_path / "model.int8.onnx"), str(tmp_path / "model.onnx"))

    class OldExport:  # an export made before the exports carried the map
        def __init__(self, path: object) -> None:
            self.output_names = ["logits", "features"]

    monkeypatch.setattr("brain_tumor.model_loading.find_exports", lambda checkpoint: exports)
    monkeypatch.setattr("brain_tumor.model_loading.OnnxPredictor", OldExport)
    predictor = load_predictor(path, precision="fp32")  # exports "beside" it are not used
    assert predictor.onnx is None and predictor.evidence_record is not None
    assert predictor.compute["engine"]["engine"] == "pytorch"
    with pytest.raises(ValueError, match="no tumour_evidence output"):
        load_predictor(path, onnx=tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="tumour map's evidence"):
        load_predictor(path, engine="onnx")
    no_head = tmp_path / "no-head.pt"
    save_model_checkpoint(no_head, build_classifier("none", 3), architecture="resnet50-v1", class_names=CLASSES,
                          preprocessing=preprocessing_for("none", 64), config=to_dict(RunConfig()), epoch=0,
                          metrics={}, extra={"tumour_evidence": {"threshold": 0.5}})
    with pytest.raises(ValueError, match="no tumour map"):
        Predictor.from_checkpoint(no_head)
    with pytest.raises(ValueError, match="cannot replace"):
        save_model_checkpoint(tmp_path / "x.pt", build_classifier("none", 3), architecture="resnet50-v1",
                              class_names=CLASSES, preprocessing=preprocessing_for("none", 64), config={}, epoch=0,
                              metrics={}, extra={"class_names": ["a"]})
    broken = tmp_path / "broken.pt"
    payload = torch.load(path, weights_only=True)
    payload["tumour_evidence"] = {"threshold": True}
    torch.save(payload, broken)
    with pytest.raises(ValueError, match="threshold"):
        Predictor.from_checkpoint(broken)


def _boxed_dataset(root: Path, per_class: int = 12, size: int = 48) -> Path:
    """A manifest dataset of synthetic slices whose blob (the "tumour") has its box."""
    rng = np.random.default_rng(0)
    rows = ["index,label,path,patient_id,cv_fold,box_x_center,box_y_center,box_width,box_height"]
    centres = [(0.35, 0.35), (0.7, 0.5), (0.4, 0.7)]  # (x, y) of synthetic_slice's blob per class
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(synthetic_slice(rng, label, size)).save(root / name / f"{i}.png")
            x, y = centres[label]
            rows.append(f"{len(rows)},{name},{name}/{i}.png,{label}{i:02d},{1 + i % 5},{x},{y},0.2,0.2")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.slow
def test_train_with_a_tumour_map_stores_its_threshold(tmp_path: Path) -> None:
    data = _boxed_dataset(tmp_path / "data")
    results, work = tmp_path / "results", tmp_path / "runs"
    args = ["train", "--output", str(results), "--work-dir", str(work),
            *tiny_run_settings(data, tmp_path / "cache"), "--set", "train.tumour_map=1.0",
            "--set", "train.counterfactual=0.2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(work / "model.pt")
    record = checkpoint.meta["tumour_evidence"]
    assert 0 <= record["threshold"] <= 1 and record["quantile"] == 0.01
    assert has_tumour_map(checkpoint.build())
    run = json.loads((results / "run.json").read_text())
    assert run["recipe"]["tumour_map"] == 1.0
    assert record["fitted_on"].startswith(f"{run['data']['n_val']} inner-validation")  # validation slices only
    header, *predictions = (results / "test_predictions.csv").read_text().splitlines()
    assert predictions and header.split(",")[-1] == "tumour_evidence"  # each held-out slice's evidence
    metrics = json.loads((results / "metrics.json").read_text())
    called = [float(row.split(",")[-1]) < metrics["tumour_map"]["threshold"] for row in predictions]
    assert np.mean(called) == pytest.approx(metrics["tumour_map"]["called_no_tumour"])


def test_answer_metrics_count_no_tumour_answers_as_not_right() -> None:
    labels = np.array([0, 0, 1, 2])
    probs = np.eye(3)[[0, 1, 1, 2]]  # the second slice is misclassified
    result = answer_metrics(labels, probs, np.array([0.9, 0.9, 0.1, 0.9]), 0.5, CLASSES)
    assert result["called_no_tumour"] == 0.25 and result["accuracy_with_map_answer"] == 0.5
    assert result["called_no_tumour_per_class"] == {"glioma": 0.0, "meningioma": 1.0, "pituitary": 0.0}


def test_evaluation_of_a_map_model_adds_the_answer_it_gives(tmp_path: Path) -> None:
    from brain_tumor.evaluation.run_eval import evaluate_checkpoint

    slices = [synthetic_slice(np.random.default_rng(k), k % 3, 64) for k in range(6)]
    images = torch.from_numpy(np.stack(slices))[:, None]
    labels = torch.tensor([k % 3 for k in range(6)])
    metrics, _, _, evidence = evaluate_checkpoint(_checkpoint(tmp_path, bias=-6.0), images, labels, list(range(6)))
    assert metrics["tumour_map"]["called_no_tumour"] == 1.0 and metrics["tumour_map"]["accuracy_with_map_answer"] == 0
    assert evidence is not None and evidence.shape == (6,) and (evidence < 0.01).all()
    plain = tmp_path / "plain.pt"
    save_model_checkpoint(plain, build_classifier("none", 3), architecture="resnet50-v1", class_names=CLASSES,
                          preprocessing=preprocessing_for("none", 64), config=to_dict(RunConfig()), epoch=0, metrics={})
    measured = evaluate_checkpoint(plain, images, labels, list(range(6)))
    assert "tumour_map" not in measured.metrics and measured.evidence is None


def test_logits_and_evidence_come_from_one_forward_pass_per_batch(tmp_path: Path) -> None:
    from brain_tumor.batched import logits_and_evidence

    torch.manual_seed(1)
    network = add_tumour_map(build_classifier("none", 3)).eval()
    with torch.no_grad():  # a map whose evidence differs from slice to slice
        network.tumour_map.weight.normal_(0, 0.05)  # type: ignore[union-attr, operator]
    path = save_model_checkpoint(tmp_path / "m.pt", network, architecture="resnet50-v1", class_names=CLASSES,
                                 preprocessing=preprocessing_for("none", 64), config=to_dict(RunConfig()), epoch=0,
                                 metrics={}, extra={"tumour_evidence": {"threshold": 0.5, "quantile": 0.01}})
    predictor = Predictor.from_checkpoint(path)
    images = torch.from_numpy(np.stack([synthetic_slice(np.random.default_rng(k), k % 3, 64)
                                        for k in range(5)]))[:, None]
    separate = predictor.forward_parts(images, ("evidence",))["evidence"].numpy()  # the two-pass path's evidence
    assert np.ptp(separate) > 1e-3
    calls: list[int] = []
    handle = predictor.network.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    logits, evidence = logits_and_evidence(predictor, images, batch_size=2)
    handle.remove()
    assert calls == [2, 2, 1]  # one pass a batch, not one for the logits and one for the evidence
    assert logits == pytest.approx(predictor.logits_for(images), abs=1e-5)
    assert evidence == pytest.approx(separate, abs=1e-5)
    calls.clear()
    handle = predictor.network.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    flipped = logits_and_evidence(predictor.use_tta("flip"), images, batch_size=5)
    handle.remove()
    assert calls == [5, 5]  # the slice and its mirror, nothing more
    assert flipped[0] == pytest.approx(predictor.logits_for(images), abs=1e-5)  # the TTA's logits
    assert flipped[1] == pytest.approx(separate, abs=1e-5)  # the unflipped slice's evidence


def test_the_gate_answers_before_the_map_and_a_check_without_threshold_never_answers() -> None:
    assert no_tumour_answer(0.9, 0.5, 0.1, 0.3) == ("gate", 0.9)  # both say no tumour: the gate's answer
    assert no_tumour_answer(0.2, 0.5, 0.1, 0.3) == pytest.approx(("tumour_map", 0.9))  # only the map
    assert no_tumour_answer(0.2, 0.5, 0.8, 0.3) is None  # neither
    assert no_tumour_answer(0.9, None, 0.1, None) is None  # no thresholds, no answer
    assert no_tumour_answer(None, 0.5, 0.3, 0.3) is None  # evidence at the threshold is not below it


def test_predictions_carry_each_slice_evidence_in_its_row(tmp_path: Path) -> None:
    from brain_tumor.evaluation.run_eval import write_predictions

    probs = np.eye(3)[[0, 1, 2]]
    path = write_predictions(tmp_path / "p.csv", ["a.jpg", "b.jpg", "c.jpg"], np.array([0, 1, 0]), probs, CLASSES,
                             np.array([0.1, 0.5, 0.9]))
    header, *rows = path.read_text().splitlines()
    assert header.split(",")[-1] == "tumour_evidence"
    assert [(r.split(",")[0], float(r.split(",")[-1])) for r in rows] == [("a.jpg", 0.1), ("b.jpg", 0.5),
                                                                         ("c.jpg", 0.9)]
    with pytest.raises(ValueError):  # one value per slice, or nothing is written
        write_predictions(tmp_path / "q.csv", ["a.jpg"], np.array([0]), probs[:1], CLASSES, np.array([0.1, 0.2]))
    assert not (tmp_path / "q.csv").exists()
