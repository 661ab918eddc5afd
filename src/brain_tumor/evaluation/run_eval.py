"""Evaluate one trained run on its test split: metrics.json, predictions and figures."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from brain_tumor import atomic
from brain_tumor.batched import logits_and_evidence
from brain_tumor.evaluation.metrics import classification_metrics, roc_curves
from brain_tumor.evaluation.plots import plot_confusion_matrix, plot_history, plot_roc
from brain_tumor.inference import Predictor
from brain_tumor.training.checkpoint import read_checkpoint_meta
from brain_tumor.tumour_evidence import answer_metrics


def write_json(data: dict[str, Any], path: Path) -> Path:
    """Atomic JSON write (:func:`brain_tumor.atomic.write_json`)."""
    return atomic.write_json(data, path)


def history_parts(metrics_csv: Path) -> list[Path]:
    """The CSV logs of a run in the order they were written: the parts kept aside at each resume
    (``metrics-before-resume-N.csv``, see :func:`brain_tumor.training.fit.keep_log_before_resume`),
    then the current ``metrics.csv``."""
    parts = sorted(metrics_csv.parent.glob("metrics-before-resume-*.csv"),
                   key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return [*parts, metrics_csv] if metrics_csv.is_file() else parts


def read_history(metrics_csv: Path) -> dict[str, list[float]]:
    """Per-epoch values of each logged metric from Lightning's CSV log (one value per epoch), across
    resumptions; an epoch logged again after a resume takes its later values. Lists are indexed by
    epoch: an epoch whose log was lost reads NaN."""
    by_epoch: dict[int, dict[str, float]] = {}
    for part in history_parts(metrics_csv):
        seen: set[int] = set()
        with part.open() as f:
            for row in csv.DictReader(f):
                epoch = int(row["epoch"]) if row.get("epoch") else None
                if epoch is None:
                    continue
                if epoch not in seen:  # a re-run epoch replaces the interrupted one
                    by_epoch[epoch] = {}
                    seen.add(epoch)
                for key, value in row.items():
                    if key not in ("epoch", "step") and value not in ("", None):
                        by_epoch[epoch][key] = float(value)
    keys = sorted({k for values in by_epoch.values() for k in values})
    epochs = range(max(by_epoch) + 1) if by_epoch else range(0)  # list position = epoch, NaN where one was lost
    return {k: [by_epoch.get(e, {}).get(k, float("nan")) for e in epochs] for k in keys}


class Evaluation(NamedTuple):
    """What :func:`evaluate_checkpoint` measured: metrics, probabilities ``[N, classes]``, the
    checkpoint's metadata and, for a model with a tumour map, each slice's tumour evidence."""

    metrics: dict[str, Any]
    probs: np.ndarray
    meta: dict[str, Any]
    evidence: np.ndarray | None


def evaluate_checkpoint(checkpoint: Path, images: torch.Tensor, labels: torch.Tensor,
                        positions: list[int]) -> Evaluation:
    """Metrics, probabilities and checkpoint metadata of a model on the given positions, through the
    one inference path (:class:`brain_tumor.inference.Predictor`, PyTorch fp32, raw probabilities).
    The metrics score the classifier; for a model with a tumour map, ``tumour_map`` adds what a
    user gets with its "no tumour" answer on (:func:`brain_tumor.tumour_evidence.answer_metrics`)."""
    predictor = Predictor.from_checkpoint(checkpoint)
    record, x, y = predictor.evidence_record, images[positions], labels[positions].numpy()
    evidence: np.ndarray | None = None
    if record is None:
        logits = predictor.logits_for(x, progress=True)
    else:  # one forward pass gives both
        logits, evidence = logits_and_evidence(predictor, x, progress=True)
    probs = torch.from_numpy(logits).softmax(1).numpy()
    metrics = classification_metrics(y, probs, predictor.class_names)
    if record is not None and evidence is not None:
        metrics["tumour_map"] = answer_metrics(y, probs, evidence, float(record["threshold"]), predictor.class_names)
    return Evaluation(metrics, probs, read_checkpoint_meta(checkpoint), evidence)


def write_predictions(path: Path, paths: list[str], y_true: np.ndarray, probs: np.ndarray,
                      class_names: list[str], evidence: np.ndarray | None = None) -> Path:
    """CSV of every test prediction (for later statistics), written atomically; ``paths`` name the
    slices (results use each record's ``result_name``: relative to the dataset root). With
    ``evidence`` (a model with a tumour map) a ``tumour_evidence`` column follows; the threshold it
    is read against is in the run's ``metrics.json`` (``tumour_map``)."""
    header = ["path", "label", "predicted", *[f"p_{c}" for c in class_names]]
    rows = [[p, class_names[t], class_names[int(row.argmax())], *[f"{v:.6f}" for v in row]]
            for p, t, row in zip(paths, y_true, probs, strict=True)]
    if evidence is not None:
        header.append("tumour_evidence")
        rows = [[*row, f"{e:.6f}"] for row, e in zip(rows, evidence, strict=True)]
    return atomic.write_csv(path, header, rows)


def draw_run_figures(run_dir: Path, metrics: dict[str, Any], y_true: np.ndarray, probs: np.ndarray,
                     class_names: list[str], title: str) -> None:
    """Confusion matrix, ROC curves and accuracy/loss curves of a run."""
    figures = run_dir / "figures"
    plot_confusion_matrix(metrics["confusion_matrix"], class_names, figures / "confusion_matrix.png",
                          f"{title}: test confusion matrix")
    plot_roc(roc_curves(y_true, probs, class_names), metrics["auc"], figures / "roc.png",
             f"{title}: test ROC")
    plot_history(read_history(run_dir / "logs" / "metrics.csv"), figures / "curves.png",
                 f"{title}: accuracy and loss")
