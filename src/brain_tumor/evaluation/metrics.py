"""Metrics as pure functions of labels and probabilities."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support/AUC (keyed by class), macro and weighted
    averages, macro AUC and the confusion matrix (rows: true class, columns: predicted)."""
    y_true = np.asarray(y_true)
    y_pred = probs.argmax(1)
    labels = list(range(len(class_names)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    onehot = np.eye(len(class_names))[y_true]
    aucs = [float(roc_auc_score(onehot[:, k], probs[:, k])) if 0 < onehot[:, k].sum() < len(y_true)
            else float("nan") for k in labels]

    def per_class(values: Iterable[float]) -> dict[str, float]:
        return {c: float(v) for c, v in zip(class_names, values)}

    result: dict[str, Any] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": per_class(p), "recall": per_class(r), "f1": per_class(f),
        "support": {c: int(v) for c, v in zip(class_names, s)},
        "auc": per_class(aucs),
        "macro_auc": float(np.nanmean(aucs)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
    for average in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                       average=average, zero_division=0)
        result[f"{average}_avg"] = {"precision": float(ap), "recall": float(ar), "f1": float(af)}
    result["macro_f1"] = float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    return result


def roc_curves(y_true: np.ndarray, probs: np.ndarray,
               class_names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One-vs-rest ROC curve ``(fpr, tpr)`` per class."""
    curves = {}
    for k, name in enumerate(class_names):
        fpr, tpr, _ = roc_curve(np.asarray(y_true) == k, probs[:, k])
        curves[name] = (fpr, tpr)
    return curves
