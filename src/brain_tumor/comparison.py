"""Comparing runs (or CVs) on the same test slices, paired by path: McNemar's test, paired
differences with CIs resampling patients, and the same over repeats with several seeds."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from brain_tumor.data.manifest import CLASS_NAMES
from brain_tumor.evaluation import statistics as st


def read_predictions(run_dirs: list[Path]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pooled ``(paths, labels, probabilities)`` from each run's test_predictions.csv."""
    paths, labels, probs = [], [], []
    for run_dir in run_dirs:
        with (run_dir / "test_predictions.csv").open() as f:
            for row in csv.DictReader(f):
                paths.append(row["path"])
                labels.append(CLASS_NAMES.index(row["label"]))
                probs.append([float(row[f"p_{c}"]) for c in CLASS_NAMES])
    return paths, np.asarray(labels), np.asarray(probs)


def compare(dir_a: Path, dir_b: Path, patient_of: dict[str, str] | None = None) -> dict[str, Any]:
    """McNemar's test between two runs (or CVs) on the same test slices, paired by path; with
    ``patient_of`` (path -> patient) also the paired differences in accuracy and meningioma
    recall with 95% CIs resampling patients."""
    paths_a, y_a, p_a = read_predictions(_run_dirs(dir_a))
    paths_b, y_b, p_b = read_predictions(_run_dirs(dir_b))
    index_b = {p: i for i, p in enumerate(paths_b)}
    common = [i for i, p in enumerate(paths_a) if p in index_b]
    if not common:
        raise ValueError("the two runs share no test slices")
    j = [index_b[paths_a[i]] for i in common]
    correct_a = p_a[common].argmax(1) == y_a[common]
    correct_b = p_b[j].argmax(1) == y_b[j]
    result: dict[str, Any] = {"n": len(common), "accuracy_a": float(correct_a.mean()),
                              "accuracy_b": float(correct_b.mean()), **st.mcnemar(correct_a, correct_b)}
    if patient_of is not None:
        groups = [patient_of.get(paths_a[i], paths_a[i]) for i in common]
        meningioma = CLASS_NAMES.index("meningioma")
        for name, fn in [("accuracy", st.accuracy), ("meningioma_recall", st.class_recall(meningioma))]:
            point, low, high = st.paired_bootstrap_difference(fn, y_a[common], p_a[common], p_b[j], groups)
            result[f"{name}_difference_95ci_by_patient"] = {"value": point, "low": low, "high": high}
    return result


def _run_dirs(d: Path) -> list[Path]:
    """The run folders (one, or a CV's folds) holding test predictions under ``d``."""
    return sorted(p.parent for p in d.glob("**/test_predictions.csv"))


def compare_repeats(pairs: list[tuple[Path, Path]], patient_of: dict[str, str]) -> dict[str, Any]:
    """Two recipes trained with several seeds each, ``pairs[r] = (run of A, run of B)`` with seed r,
    all on the same test slices: McNemar's test per pair, and the mean over pairs of the paired
    differences in accuracy and meningioma recall with 95% CIs resampling patients."""
    per_pair = [compare(a, b) | {"run_a": str(a), "run_b": str(b)} for a, b in pairs]
    read = [(_predictions_by_path(a), _predictions_by_path(b)) for a, b in pairs]
    shared = set.intersection(*(set(a) & set(b) for a, b in read))
    if not shared:
        raise ValueError("the runs share no test slices")
    paths = sorted(shared)
    y = np.asarray([read[0][0][p][0] for p in paths])
    probs_a = [np.asarray([a[p][1] for p in paths]) for a, _ in read]
    probs_b = [np.asarray([b[p][1] for p in paths]) for _, b in read]
    groups = [patient_of.get(p, p) for p in paths]
    result: dict[str, Any] = {
        "n": len(paths), "repeats": len(pairs),
        "mean_accuracy_a": float(np.mean([st.accuracy(y, q) for q in probs_a])),
        "mean_accuracy_b": float(np.mean([st.accuracy(y, q) for q in probs_b])), "pairs": per_pair}
    meningioma = CLASS_NAMES.index("meningioma")
    for name, fn in [("accuracy", st.accuracy), ("meningioma_recall", st.class_recall(meningioma))]:
        point, low, high = st.repeated_bootstrap_difference(fn, y, probs_a, probs_b, groups)
        result[f"mean_{name}_difference_95ci_by_patient"] = {"value": point, "low": low, "high": high}
    return result


def _predictions_by_path(run: Path) -> dict[str, tuple[int, np.ndarray]]:
    paths, y, probs = read_predictions(_run_dirs(run))
    return {path: (int(label), row) for path, label, row in zip(paths, y, probs)}


def patients_by_path(cv_dir: Path) -> dict[str, str]:
    """Slice name (as results write it) -> patient id for the dataset a CV folder was run on (from
    its config.yaml, or for an ensemble folder from its first member's)."""
    from brain_tumor.config import load_config
    from brain_tumor.data.manifest import load_records

    records = load_records(load_config(dataset_config(cv_dir)).data.root)
    return {r.result_name: r.patient_id or str(r.index) for r in records}


def dataset_config(cv_dir: Path) -> Path:
    """The config.yaml that names a CV folder's dataset: its own, or, for an ensemble folder
    (``ensemble.json``; members are sibling folders), the first member's that has one."""
    own = cv_dir / "config.yaml"
    if own.is_file() or not (cv_dir / "ensemble.json").is_file():
        return own
    members = json.loads((cv_dir / "ensemble.json").read_text()).get("members", [])
    found = (cv_dir.parent / str(m) / "config.yaml" for m in members)
    return next((p for p in found if p.is_file()), own)
