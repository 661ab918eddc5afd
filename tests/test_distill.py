"""Knowledge distillation: targets mixing the label with teachers' answers, teachers per CV fold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from brain_tumor.cli import app
from brain_tumor.config import RunConfig, apply_overrides
from brain_tumor.data.datamodule import SliceDataset, distilled_target
from brain_tumor.model import build_classifier, preprocessing_for
from brain_tumor.training.distill import teacher_paths, teacher_probabilities
from tests.conftest import tiny_run_settings


def test_teacher_paths_fill_the_fold() -> None:
    assert teacher_paths("a/fold-{fold}/m.pt, runs/b/fold-{fold}/model.pt", 3) == ["a/fold-3/m.pt",
                                                                                  "runs/b/fold-3/model.pt"]
    assert teacher_paths("a.pt") == ["a.pt"]
    with pytest.raises(ValueError, match="cross-validation"):
        teacher_paths("runs/fold-{fold}/model.pt")
    with pytest.raises(ValueError, match="must name {fold}"):  # one model for every fold saw most folds' patients
        teacher_paths("a.pt,runs/fold-{fold}/model.pt", 2)


def test_target_mixes_the_label_with_the_teachers() -> None:
    target = distilled_target(2, torch.tensor([0.6, 0.3, 0.1]), 0.5)
    assert torch.allclose(target, torch.tensor([0.3, 0.15, 0.55])) and target.sum() == pytest.approx(1.0)
    images = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    soft = torch.tensor([[0.2, 0.8, 0.0], [0.0, 0.0, 0.0], [0.1, 0.1, 0.8]])
    data = SliceDataset(images, torch.tensor([0, 1, 2]), [0, 2], soft_targets=soft, distill_weight=0.25)
    assert torch.allclose(data[0][1], torch.tensor([0.8, 0.2, 0.0]))  # position 0
    assert torch.allclose(data[1][1], torch.tensor([0.025, 0.025, 0.95]))  # position 2


def test_teachers_answer_training_slices_and_must_match_the_student(tiny_checkpoint: Path, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    images = torch.randint(0, 255, (6, 1, 64, 64), dtype=torch.uint8)
    student = preprocessing_for("none", 64, "paper")
    classes = ["glioma", "meningioma", "pituitary"]
    split = {"name": "fold1", "test_indices_sha256": "abc"}
    probs = teacher_probabilities([str(tiny_checkpoint)], images, [1, 3, 4], student, 2.0, classes, split)
    assert probs.shape == (6, 3) and torch.allclose(probs[[1, 3, 4]].sum(1), torch.ones(3))
    assert probs[[0, 2, 5]].abs().sum() == 0
    assert "records no split" in caplog.text  # an older checkpoint: cannot be checked, said so
    with pytest.raises(ValueError, match="reads 64 px"):
        teacher_probabilities([str(tiny_checkpoint)], images, [1], preprocessing_for("none", 32, "paper"), 1.0,
                              classes, split)
    with pytest.raises(ValueError, match="names classes"):
        teacher_probabilities([str(tiny_checkpoint)], images, [1], student, 1.0, ["a", "b", "c"], split)
    payload = torch.load(tiny_checkpoint, weights_only=True)
    other = tmp_path / "other.pt"
    torch.save({**payload, "split": {"name": "fold2", "test_indices_sha256": "def"}}, other)
    with pytest.raises(ValueError, match="held out on other slices"):
        teacher_probabilities([str(other)], images, [1], student, 1.0, classes, split)
    same = tmp_path / "same.pt"
    torch.save({**payload, "split": dict(split)}, same)
    mean = teacher_probabilities([str(tiny_checkpoint), str(same)], images, [1], student, 1.0, classes, split)
    assert torch.allclose(mean[1], teacher_probabilities([str(same)], images, [1], student, 1.0, classes, split)[1])


def test_probability_targets_take_the_soft_loss() -> None:
    from brain_tumor.training.module import SliceClassifier

    module = SliceClassifier(build_classifier("none", 3), preprocessing_for("none", 32, "paper"))
    images = torch.randint(0, 255, (4, 1, 32, 32), dtype=torch.uint8)
    targets = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    module.eval()
    loss = module._train_step(images, targets)
    assert loss is not None
    assert loss.item() == pytest.approx(F.cross_entropy(module(images).float(), targets).item(), rel=1e-4)
    assert module._train_step(images, torch.tensor([0, 1, 2, 0])) is None  # plain labels: the shared path


def test_distillation_settings_are_checked() -> None:
    assert apply_overrides(RunConfig(), ["train.teachers=a.pt"]).train.distill_weight == 0.5
    with pytest.raises(ValueError, match="distill_weight"):
        apply_overrides(RunConfig(), ["train.teachers=a.pt", "train.distill_weight=0"])
    with pytest.raises(ValueError, match="cannot be combined"):
        apply_overrides(RunConfig(), ["train.teachers=a.pt", "train.mixup_alpha=0.2"])
    with pytest.raises(ValueError, match="label_smoothing"):
        apply_overrides(RunConfig(), ["train.teachers=a.pt", "train.label_smoothing=0.1"])


@pytest.mark.slow
def test_cv_distils_each_fold_from_its_own_teachers(class_folder_dataset: Path, tmp_path: Path) -> None:
    teachers = tmp_path / "teachers"
    base = ["cv", "--grouping", "slice", *tiny_run_settings(class_folder_dataset, tmp_path / "cache")]
    two = ["--fold", "1", "--fold", "2"]
    first = CliRunner().invoke(app, [*base, *two, "--results-dir", str(tmp_path / "t"), "--work-dir", str(teachers)])
    assert first.exit_code == 0, first.output
    distil = ["--set", f"train.teachers={teachers}/fold-{{fold}}/model.pt", "--set", "train.distill_weight=0.7"]
    result = CliRunner().invoke(app, [*base, *two, *distil, "--results-dir", str(tmp_path / "s"),
                                      "--work-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    for k in (1, 2):
        recipe = json.loads((tmp_path / "s" / f"fold-{k}" / "run.json").read_text())["recipe"]
        assert recipe["teachers"].endswith("fold-{fold}/model.pt") and recipe["distill_weight"] == 0.7
        # each fold's teacher recorded the same held-out slices as the student: checked, and recorded again
        assert torch.load(tmp_path / "runs" / f"fold-{k}" / "model.pt", weights_only=True)["split"] == torch.load(
            teachers / f"fold-{k}" / "model.pt", weights_only=True)["split"]
    (teachers / "fold-2" / "model.pt").unlink()  # a fold without its teacher is refused, not trained on labels alone
    again = CliRunner().invoke(app, [*base, *distil, "--fold", "2", "--results-dir", str(tmp_path / "s2"),
                                     "--work-dir", str(tmp_path / "runs2")])
    assert again.exit_code == 2 and "fold-2" in again.output
