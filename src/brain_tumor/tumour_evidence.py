"""Tumour evidence: how strongly a model's tumour map finds tumour tissue anywhere in a slice, and
the threshold below which the slice is answered "no tumour".

A model trained with ``train.tumour_map`` carries a map head (:func:`brain_tumor.model.add_tumour_map`);
a slice's evidence is its strongest cell's probability (:func:`brain_tumor.model.tumour_evidence`).
The threshold is fitted when training ends, on the inner validation slices (slices the optimiser
never saw, each holding a tumour, never the test slices; in a patient-wise CV they come from the
training patients, in the paper's random split they may share patients with the test): the
:data:`EVIDENCE_QUANTILE` quantile of their evidence, so about that share of validation slices
falls below it (new patients' slices may fall below it more often: measure it, as
``brain-tumor shortcut-test`` does on unmodified slices). It is stored in the checkpoint
(``tumour_evidence``): plain numbers, nothing unpickled.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EVIDENCE_QUANTILE = 0.01  # share of validation tumour slices allowed below the threshold


def evidence_threshold(scores: np.ndarray, quantile: float = EVIDENCE_QUANTILE) -> float:
    """The ``quantile`` of tumour slices' evidence ``scores`` (lower interpolation: a threshold that
    is one of the scores, so exactly the slices below it fall under)."""
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no validation slice with a tumour to fit the tumour-evidence threshold on")
    if not 0 <= quantile < 1:
        raise ValueError(f"quantile must be in [0, 1), got {quantile}")
    return float(np.quantile(values, quantile, method="lower"))


def evidence_record(scores: np.ndarray, quantile: float = EVIDENCE_QUANTILE) -> dict[str, Any]:
    """What the checkpoint stores: the threshold, how it was fitted, and the validation evidence's
    spread (to read a later shift against)."""
    values = np.asarray(scores, dtype=np.float64)
    return {"threshold": evidence_threshold(values, quantile), "quantile": quantile,
            "fitted_on": f"{values.size} inner-validation slices with a tumour",
            "validation_evidence": {f"q{round(100 * q):02d}": float(np.quantile(values, q))
                                    for q in (0.01, 0.05, 0.5)}}


def read_evidence_record(meta: dict[str, Any]) -> dict[str, Any] | None:
    """A checkpoint's tumour-evidence record (None without one), checked to be usable."""
    record = meta.get("tumour_evidence")
    if record is None:
        return None
    threshold = record.get("threshold") if isinstance(record, dict) else None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= float(threshold) <= 1:
        raise ValueError(f"tumour_evidence.threshold must be a probability, got {threshold!r}")
    return dict(record)


def answer_metrics(labels: np.ndarray, probs: np.ndarray, evidence: np.ndarray, threshold: float,
                   class_names: list[str]) -> dict[str, Any]:
    """What a user gets with the map's answer on, for tumour slices with known ``labels``: the share
    answered "no tumour" (evidence below ``threshold``; overall and per class) and the share
    answered right (not "no tumour", and the most probable class is the label)."""
    labels, evidence = np.asarray(labels), np.asarray(evidence, dtype=np.float64)
    none = evidence < threshold
    right = ~none & (np.asarray(probs).argmax(1) == labels)
    return {"threshold": float(threshold), "n": int(labels.size),
            "called_no_tumour": float(none.mean()) if labels.size else float("nan"),
            "accuracy_with_map_answer": float(right.mean()) if labels.size else float("nan"),
            "called_no_tumour_per_class": {c: float(none[labels == k].mean()) if (labels == k).any() else None
                                           for k, c in enumerate(class_names)}}
