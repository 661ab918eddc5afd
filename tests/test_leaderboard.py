"""The recipe table (``brain-tumor leaderboard``) on synthetic CV folders."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from brain_tumor.cli import app
from brain_tumor.data.manifest import load_records
from brain_tumor.leaderboard import leaderboard, recipe_text


def _cv(root: Path, name: str, dataset: Path, train: dict[str, object], right: float, folds: int = 5,
        image_size: int = 224) -> None:
    """A CV folder whose folds got a share ``right`` of the dataset's slices right (seeded)."""
    cv = root / name
    cv.mkdir(parents=True)
    config = {"data": {"root": str(dataset), "image_size": image_size}, "model": {"freeze_layers": 15},
              "train": {"max_epochs": 12, "precision": "bf16-mixed", **train}}
    (cv / "config.yaml").write_text(yaml.safe_dump(config))
    records = load_records(dataset)
    rng = np.random.default_rng(len(name))
    classes = ["glioma", "meningioma", "pituitary"]
    for k in range(1, folds + 1):
        fold = cv / f"fold-{k}"
        fold.mkdir()
        with (fold / "test_predictions.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", *(f"p_{c}" for c in classes)])
            for r in records[k - 1::5]:
                truth = classes.index(r.label)
                answer = truth if rng.random() < right else (truth + 1) % 3
                p = [0.1, 0.1, 0.1]
                p[answer] = 0.8
                writer.writerow([r.result_name, r.label, *p])
        (fold / "metrics.json").write_text(json.dumps({"train_seconds": 600.0, "eval_seconds": 60.0}))
        (fold / "environment.json").write_text(json.dumps({"cpu_kind": "test-cpu", "torch_threads": 2}))
    splits = [{"name": f"fold{k}", "seed": 0, "train": [], "val": [], "test": list(range(k - 1, len(records), 5))}
              for k in range(1, 6)]
    (cv / "splits.json").write_text(json.dumps(splits))
    (cv / "summary.json").write_text(json.dumps({"grouping": "slice" if name.startswith("slice-") else "official"}))


def test_sorted_by_accuracy_each_against_the_paper_recipe_at_its_size(class_folder_dataset: Path,
                                                                      tmp_path: Path) -> None:
    root = tmp_path / "cv"
    _cv(root, "paper-224", class_folder_dataset, {}, right=0.7)
    _cv(root, "adamw-224", class_folder_dataset, {"optimizer": "adamw", "schedule": "cosine"}, right=0.95)
    _cv(root, "paper-128", class_folder_dataset, {}, right=0.5, image_size=128)
    _cv(root, "partial-224", class_folder_dataset, {"label_smoothing": 0.1}, right=1.0, folds=2)
    _cv(root, "paper-224-e6", class_folder_dataset, {"max_epochs": 6}, right=0.6)  # the paper recipe, shorter
    _cv(root, "decay-224", class_folder_dataset, {"weight_decay": 0.05}, right=0.55)  # another recipe
    entries = leaderboard(root, n_boot=50)
    assert entries[0].name == "adamw-224" and entries[-1].name == "partial-224"  # partial CVs last
    complete = [e.accuracy["value"] for e in entries[:-1]]
    assert complete == sorted(complete, reverse=True)
    by_name = {e.name: e for e in entries}
    best, paper = by_name["adamw-224"], by_name["paper-224"]
    assert best.baseline == "paper-224"  # the paper recipe at the same size and the closest budget (12 epochs)
    assert by_name["decay-224"].baseline == "paper-224"
    assert [by_name[n].baseline for n in ("paper-224", "paper-224-e6", "paper-128")] == [None, None, None]
    assert best.difference is not None
    assert best.difference["value"] == pytest.approx(100 * (best.accuracy["value"] - paper.accuracy["value"]))
    assert best.recipe == "model.freeze_layers=15, train.optimizer=adamw, train.schedule=cosine, train.max_epochs=12"
    assert best.minutes_per_fold == pytest.approx(11.0) and best.cpu_hours == pytest.approx(5 * 660 * 2 / 3600)
    assert best.cpu == ["test-cpu"]
    assert by_name["partial-224"].folds == [1, 2] and by_name["partial-224"].baseline == "paper-224"

    out = CliRunner().invoke(app, ["leaderboard", str(root), "--output", str(tmp_path / "board")])
    assert out.exit_code == 0, out.output
    table = (tmp_path / "board.md").read_text()
    assert "the baseline" in table and "vs `paper-224`" in table
    assert [row["name"] for row in json.loads((tmp_path / "board.json").read_text())][0] == "adamw-224"


def test_recipe_text_names_what_differs_from_the_defaults() -> None:
    assert recipe_text({}) == "defaults"
    assert recipe_text({"data": {"image_size": 128}, "train": {"label_smoothing": 0.1}}) == "train.label_smoothing=0.1"


def test_slices_missing_from_the_dataset_are_refused(class_folder_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "cv"
    _cv(root, "paper-224", class_folder_dataset, {}, right=0.7)
    csv_path = root / "paper-224" / "fold-1" / "test_predictions.csv"
    csv_path.write_text(csv_path.read_text() + "elsewhere/x.png,glioma,0.8,0.1,0.1\n")
    with pytest.raises(ValueError, match="not in the dataset's manifest"):
        leaderboard(root, n_boot=10)


def test_no_cv_folders_is_one_clear_error(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["leaderboard", str(tmp_path)])
    assert out.exit_code != 0 and "no cross-validation folders" in out.output


def test_an_ensemble_of_cvs_is_scored_fold_by_fold_and_joins_the_table(class_folder_dataset: Path,
                                                                       tmp_path: Path) -> None:
    from brain_tumor.comparison import read_predictions
    from brain_tumor.cv_ensemble import EnsembleInputError, ensemble_cv

    root = tmp_path / "cv"
    _cv(root, "paper-224", class_folder_dataset, {}, right=0.7)
    _cv(root, "adamw-cosine-224", class_folder_dataset, {"optimizer": "adamw"}, right=0.7)  # other seeds:
    _cv(root, "smooth-224", class_folder_dataset, {"label_smoothing": 0.1}, right=0.7)  # names of other lengths
    members = [root / n for n in ("paper-224", "adamw-cosine-224", "smooth-224")]
    rows = (members[1] / "fold-2" / "test_predictions.csv").read_text().splitlines()
    (members[1] / "fold-2" / "test_predictions.csv").write_text("\n".join([rows[0], *rows[:0:-1]]) + "\n")  # reordered
    out = CliRunner().invoke(app, ["ensemble", *map(str, members), "--output", str(root / "ensemble-3")])
    assert out.exit_code == 0, out.output
    paths, y, mean = read_predictions([root / "ensemble-3" / "fold-2"])
    for member in members:  # the mean of the members' probabilities, slice by slice
        m_paths, _, m_probs = read_predictions([member / "fold-2"])
        index = {p: i for i, p in enumerate(m_paths)}
        mean = mean - m_probs[[index[p] for p in paths]] / 3
    assert np.abs(mean).max() < 1e-5
    by_name = {e.name: e for e in leaderboard(root, n_boot=20)}
    accuracy = {name: e.accuracy["value"] for name, e in by_name.items()}
    ens = by_name["ensemble-3"]
    assert ens.baseline == "paper-224" and ens.folds == [1, 2, 3, 4, 5] and ens.image_size == 224
    assert "`adamw-cosine-224`" in ens.recipe and ens.minutes_per_fold == pytest.approx(33.0)
    # each member answers the truth or one fixed wrong class at 0.8: the mean is a majority vote
    votes = []
    for member in members:
        m_paths, m_y, m_probs = read_predictions(sorted(member.glob("fold-*")))
        order = np.argsort(m_paths)
        votes.append((m_probs.argmax(1) == m_y)[order])
    assert accuracy["ensemble-3"] == pytest.approx((np.sum(votes, axis=0) >= 2).mean())
    with pytest.raises(EnsembleInputError, match="at least 2"):
        ensemble_cv(members[:1], tmp_path / "one")
    before = (members[0] / "fold-1" / "test_predictions.csv").read_text()
    with pytest.raises(EnsembleInputError, match="one of the members"):
        ensemble_cv(members, members[0])
    with pytest.raises(EnsembleInputError, match="holds other results"):
        ensemble_cv(members[:2], members[2])
    assert (members[0] / "fold-1" / "test_predictions.csv").read_text() == before  # refused before any write
    # two ensembles compared: patients come from a member's config, so the CIs resample patients
    _cv(root, "adamw-288", class_folder_dataset, {"optimizer": "adamw"}, right=0.7, image_size=288)
    ensemble_cv([members[0], root / "adamw-288"], root / "ensemble-224-288")  # members of two resolutions
    mixed = {e.name: e for e in leaderboard(root, n_boot=10)}["ensemble-224-288"]
    assert mixed.px == "224+288" and mixed.baseline == "paper-224"  # against the paper recipe at the smaller
    assert by_name["adamw-cosine-224"].px == "224"
    ensemble_cv(members[1:], root / "ensemble-2")
    both = CliRunner().invoke(app, ["compare", str(root / "ensemble-3"), str(root / "ensemble-2")])
    assert both.exit_code == 0, both.output
    assert "accuracy_difference_95ci_by_patient" in json.loads(both.output)
    again = ensemble_cv(members[:2], root / "ensemble-3")  # an earlier ensemble's folder is replaced
    assert again["folds"] == 5 and json.loads((root / "ensemble-3" / "ensemble.json").read_text())["members"] == [
        "paper-224", "adamw-cosine-224"]
    _cv(root, "slice-paper-224", class_folder_dataset, {}, right=0.9)
    _cv(root, "slice-adamw-224", class_folder_dataset, {"optimizer": "adamw"}, right=0.9)
    with pytest.raises(EnsembleInputError, match="different groupings"):
        ensemble_cv([members[0], root / "slice-paper-224"], tmp_path / "mixed-groupings")
    ensemble_cv([root / "slice-paper-224", root / "slice-adamw-224"], root / "leaky-ensemble")
    assert "leaky-ensemble" not in {e.name for e in leaderboard(root, n_boot=10)}  # slice-level: not patient-wise
    (members[2] / "splits.json").write_text(json.dumps([{"name": "x", "seed": 0, "train": [], "val": [], "test": [0]}]))
    with pytest.raises(EnsembleInputError, match="other folds"):
        ensemble_cv(members, tmp_path / "mixed")
