"""Ensembles judged on the patient-wise protocol: each fold's held-out slices answered by the mean
of the probabilities of several CVs' fold models, every one of them trained without that fold's
patients. Built from the members' committed predictions (no model is run), so an ensemble of
recipes costs nothing to score and is scored exactly as its members are; its inference cost is
one forward pass per member.

The output is a CV folder like the members' (``fold-K/test_predictions.csv`` and ``metrics.json``,
``splits.json``, ``summary.json``) with ``ensemble.json`` naming the members in place of a
``config.yaml``, so ``compare`` and ``leaderboard`` read it as they read any CV.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from brain_tumor import atomic
from brain_tumor.comparison import patients_by_path, read_predictions
from brain_tumor.config import read_run_config
from brain_tumor.cv_report import cv_grouping, fold_cpus, fold_number, fold_seconds, summarise, summary_markdown
from brain_tumor.data.manifest import CLASS_NAMES
from brain_tumor.evaluation.metrics import classification_metrics
from brain_tumor.evaluation.run_eval import write_json, write_predictions

ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_FORMAT = "brain-tumor-ensemble/1"


class EnsembleInputError(ValueError):
    """Members that cannot be combined; the message is one line."""


def member_folds(cv_dir: Path) -> dict[int, Path]:
    """Fold number -> folder, for the folds of ``cv_dir`` that finished (have test predictions)."""
    return {fold_number(p.parent): p.parent for p in cv_dir.glob("fold-*/test_predictions.csv")}


def _splits(cv_dir: Path) -> Any:
    try:
        return json.loads((cv_dir / "splits.json").read_text())
    except (OSError, ValueError) as exc:
        raise EnsembleInputError(f"{cv_dir}: no readable splits.json (is it a `brain-tumor cv` folder?)") from exc


def grouping_of(cv_dir: Path) -> str:
    """How a CV's folds were made (``official``, ``strict``, ``slice``), from its summary.json."""
    grouping = cv_grouping(cv_dir)
    if grouping is None:
        raise EnsembleInputError(f"{cv_dir}: no summary.json naming its grouping (has a fold finished?)")
    return grouping


def check_output(output: Path, members: list[Path]) -> None:
    """Refuse an output that would overwrite a member or another CV's results."""
    if any(output.resolve() == m.resolve() for m in members):
        raise EnsembleInputError(f"--output {output} is one of the members")
    if output.exists() and any(output.iterdir()) and not (output / ENSEMBLE_FILE).is_file():
        raise EnsembleInputError(f"--output {output} holds other results (no {ENSEMBLE_FILE}): choose a new folder")


def check_members(members: list[Path]) -> list[int]:
    """The folds every member finished; members must be CVs of the same grouping and folds (same
    test slices)."""
    if len(members) < 2:
        raise EnsembleInputError("an ensemble needs at least 2 CV folders")
    if len({m.resolve() for m in members}) < len(members):
        raise EnsembleInputError("a CV folder is named twice")
    groupings = {m.name: grouping_of(m) for m in members}
    if len(set(groupings.values())) > 1:
        raise EnsembleInputError(f"members of different groupings: {groupings}")
    first = _splits(members[0])
    tests = [[s["test"] for s in first]]
    for m in members[1:]:
        tests.append([s["test"] for s in _splits(m)])
        if tests[-1] != tests[0]:
            raise EnsembleInputError(f"{m} was run on other folds than {members[0]} (its splits.json differs)")
    common = sorted(set.intersection(*(set(member_folds(m)) for m in members)))
    if not common:
        raise EnsembleInputError("the members share no finished fold")
    return common


def mean_probabilities(fold_dirs: list[Path]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(paths, labels, mean probabilities)`` of one fold over the members, paired by slice."""
    paths, y, first = read_predictions([fold_dirs[0]])
    total = first.copy()
    for d in fold_dirs[1:]:
        other_paths, other_y, probs = read_predictions([d])
        index = {p: i for i, p in enumerate(other_paths)}
        if set(index) != set(paths):
            raise EnsembleInputError(f"{d}: other test slices than {fold_dirs[0]}")
        order = [index[p] for p in paths]
        if not np.array_equal(other_y[order], y):
            raise EnsembleInputError(f"{d}: other labels than {fold_dirs[0]} for the same slices")
        total += probs[order]
    return paths, y, total / len(fold_dirs)


def ensemble_cv(members: list[Path], output: Path, n_boot: int = 2000) -> dict[str, Any]:
    """Write the ensemble's CV folder under ``output`` (a new folder, or an earlier ensemble's,
    whose folds are replaced) and return its summary."""
    folds = check_members(members)
    check_output(output, members)
    for old in output.glob("fold-*"):  # an earlier ensemble's folds: none may outlive this one
        shutil.rmtree(old)
    patient_of = patients_by_path(members[0])
    all_paths: list[str] = []
    ys, probs, fold_metrics = [], [], []
    for k in folds:
        dirs = [m / f"fold-{k}" for m in members]
        paths, y, p = mean_probabilities(dirs)
        fold_dir = output / f"fold-{k}"
        write_predictions(fold_dir / "test_predictions.csv", paths, y, p, list(CLASS_NAMES))
        seconds = [fold_seconds(json.loads((d / "metrics.json").read_text())) if (d / "metrics.json").is_file()
                   else None for d in dirs]
        metrics = {**classification_metrics(y, p, list(CLASS_NAMES)),
                   "train_seconds": None if None in seconds else float(sum(s for s in seconds if s is not None)),
                   "members": [d.parent.name for d in dirs]}
        write_json(metrics, fold_dir / "metrics.json")
        cpus = sorted({c or "?" for c in fold_cpus(dirs)})
        write_json({"cpu_kind": "; ".join(cpus), "note": "the CPUs its members' folds ran on"},
                   fold_dir / "environment.json")
        all_paths += paths
        ys.append(y)
        probs.append(p)
        fold_metrics.append(metrics)
    missing = [p for p in all_paths if p not in patient_of]
    if missing:
        raise EnsembleInputError(f"{len(missing)} slices are not in the dataset's manifest (e.g. {missing[0]})")
    summary = summarise(np.concatenate(ys), np.concatenate(probs), [patient_of[p] for p in all_paths],
                        fold_metrics, n_boot)
    summary.update({"grouping": grouping_of(members[0]), "folds": len(folds), "fold_numbers": folds,
                    "cpu": fold_cpus([output / f"fold-{k}" for k in folds])})
    shutil.copyfile(members[0] / "splits.json", output / "splits.json")
    sizes = [int(read_run_config(m).get("data", {}).get("image_size", 0)) for m in members]
    write_json({"format": ENSEMBLE_FORMAT, "members": [m.name for m in members], "image_sizes": sizes,
                "combine": "mean of the members' probabilities",
                "inference": f"{len(members)} forward passes per slice (one per member)"}, output / ENSEMBLE_FILE)
    write_json(summary, output / "summary.json")
    atomic.write_text(output / "summary.md", f"Ensemble of {', '.join(m.name for m in members)} "
                      "(mean of probabilities).\n\n" + summary_markdown(summary))
    return summary
