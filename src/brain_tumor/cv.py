"""K-fold cross-validation (patient-wise or slice-level), resumable fold by fold, with statistics.

Comparing runs lives in :mod:`brain_tumor.comparison`, the overviews of every CV and paper-split
run in :mod:`brain_tumor.cv_report`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from brain_tumor import atomic
from brain_tumor.comparison import read_predictions
from brain_tumor.config import RunConfig, resolve_precision_setting, save_config
from brain_tumor.cv_report import fold_cpus, fold_number, summarise, summary_markdown
from brain_tumor.data.manifest import CLASS_NAMES
from brain_tumor.data.splits import Split, cv_splits
from brain_tumor.evaluation.plots import plot_confusion_matrix
from brain_tumor.evaluation.run_eval import write_json
from brain_tumor.hardware import apply_threads, resolve_threads
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
    apply_threads(resolve_threads(config.train.threads))  # before: auto may time bf16 at these threads
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
