"""K-fold cross-validation (patient-wise or slice-level), resumable fold by fold, with statistics.

Comparing runs lives in :mod:`brain_tumor.comparison`, the overviews of every CV and paper-split
run in :mod:`brain_tumor.cv_report`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from brain_tumor import atomic
from brain_tumor.comparison import read_predictions
from brain_tumor.config import RunConfig, resolve_precision_setting, save_config
from brain_tumor.cv_report import fold_cpus, fold_number, fold_seconds
from brain_tumor.data.manifest import CLASS_NAMES
from brain_tumor.data.splits import Split, cv_splits
from brain_tumor.evaluation import statistics as st
from brain_tumor.evaluation.calibration import expected_calibration_error
from brain_tumor.evaluation.metrics import classification_metrics
from brain_tumor.evaluation.plots import plot_confusion_matrix
from brain_tumor.evaluation.run_eval import write_json
from brain_tumor.scenario import run_scenario
from brain_tumor.training.fit import PreparedData, load_data


def load_or_make_cv_splits(path: Path, labels: list[str], patient_ids: list[str], folds: list[int | None],
                           grouping: str, val_fraction: float, seed: int) -> list[Split]:
    """Splits saved once at ``path`` and reused (so an interrupted CV resumes on the same folds)."""
    if path.is_file():
        return [Split(**s) for s in json.loads(path.read_text())]
    splits = cv_splits(labels, patient_ids, folds, grouping, val_fraction=val_fraction, seed=seed)
    atomic.write_text(path, json.dumps([dataclasses.asdict(s) for s in splits]))
    return splits


def summarise(y: np.ndarray, probs: np.ndarray, groups: list[str], fold_metrics: list[dict[str, Any]],
              n_boot: int = 2000) -> dict[str, Any]:
    """Pooled metrics, patient-bootstrap CIs, pooled ECE, per-fold mean/std and wall time (training +
    evaluation, seconds, as each fold's metrics.json records them), patient-level accuracy."""
    pooled = classification_metrics(y, probs, list(CLASS_NAMES))
    meningioma = CLASS_NAMES.index("meningioma")
    cis = {name: dict(zip(("value", "low", "high"), st.bootstrap_ci(fn, y, probs, groups, n_boot)))
           for name, fn in [("accuracy", st.accuracy), ("macro_f1", st.macro_f1),
                            ("meningioma_recall", st.class_recall(meningioma)), ("macro_auc", st.macro_auc)]}
    patient_y, patient_p = st.patient_level(y, probs, groups)
    accs = [m["accuracy"] for m in fold_metrics]
    return {"pooled": pooled, "bootstrap_95ci_by_patient": cis,
            "fold_accuracy": accs, "fold_accuracy_mean": float(np.mean(accs)), "fold_accuracy_std": float(np.std(accs)),
            "fold_macro_f1_mean": float(np.mean([m["macro_f1"] for m in fold_metrics])),
            "ece": expected_calibration_error(probs, y),
            "fold_seconds": [fold_seconds(m) for m in fold_metrics],
            "patient_level": {"n_patients": len(patient_y), "accuracy": st.accuracy(patient_y, patient_p)}}


def run_cv(config: RunConfig, grouping: str, results_dir: Path, work_dir: Path,
           only_folds: list[int] | None = None) -> dict[str, Any]:
    """Train/evaluate every fold (finished folds are skipped) and write summary.json/.md."""
    records, images, labels = load_data(config.data.root, config.data.image_size, config.data.cache_dir,
                                        config.data.preprocessing)
    pids = [r.patient_id or str(r.index) for r in records]
    splits = load_or_make_cv_splits(results_dir / "splits.json", [r.label for r in records], pids,
                                    [r.cv_fold for r in records], grouping, config.data.val_fraction, config.data.seed)
    results_dir.mkdir(parents=True, exist_ok=True)
    # "auto" saved as what it chose on this machine; each fold resolves it again and records why
    save_config(resolve_precision_setting(config), results_dir / "config.yaml")
    fold_metrics, run_dirs = [], []
    for k, split in enumerate(splits, start=1):
        if only_folds and k not in only_folds:
            continue
        data = PreparedData(records, images, labels, list(CLASS_NAMES), split, fold=k)  # k fills {fold}
        fold_metrics.append(run_scenario(config, data, results_dir / f"fold-{k}", work_dir / f"fold-{k}",
                                         kind="cv fold"))
        run_dirs.append(results_dir / f"fold-{k}")
    paths, y, probs = read_predictions(run_dirs)
    pid_of = {r.result_name: pid for r, pid in zip(records, pids)}
    summary = summarise(y, probs, [pid_of[p] for p in paths], fold_metrics)
    summary.update({"grouping": grouping, "folds": len(run_dirs),
                    "fold_numbers": [fold_number(d) for d in run_dirs], "cpu": fold_cpus(run_dirs)})
    write_json(summary, results_dir / "summary.json")
    plot_confusion_matrix(summary["pooled"]["confusion_matrix"], list(CLASS_NAMES),
                          results_dir / "confusion_matrix_summed.png", f"{grouping} CV: summed confusion")
    atomic.write_text(results_dir / "summary.md", summary_markdown(summary))
    return summary


def summary_markdown(summary: dict[str, Any]) -> str:
    """A short table of the CV summary."""
    rows = [f"| {k} | {v['value']:.4f} | [{v['low']:.4f}, {v['high']:.4f}] |"
            for k, v in summary["bootstrap_95ci_by_patient"].items()]
    return "\n".join([
        f"# {summary['grouping']} cross-validation ({summary['folds']} folds)", "",
        f"Per-fold accuracy: {', '.join(f'{a:.4f}' for a in summary['fold_accuracy'])} "
        f"(mean {summary['fold_accuracy_mean']:.4f} ± {summary['fold_accuracy_std']:.4f}); "
        f"patient-level accuracy {summary['patient_level']['accuracy']:.4f} "
        f"over {summary['patient_level']['n_patients']} patients; pooled ECE {summary['ece']:.4f}.",
        f"Wall time per fold (training + evaluation): {_seconds_text(summary['fold_seconds'])}.", "",
        "| metric (pooled) | value | 95% CI, patients resampled |", "|---|---|---|", *rows, ""])


def _seconds_text(seconds: list[float | None]) -> str:
    return ", ".join("?" if s is None else f"{s / 60:.1f} min" for s in seconds)
