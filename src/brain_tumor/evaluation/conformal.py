"""Conformal prediction sets over class probabilities, with crepes' conformal classifier.

A set at confidence 0.95 holds every class whose conformal p-value is at least 0.05, so that
the true class is in it for at least 95% of slices exchangeable with the calibration slices.
The non-conformity score is crepes' ``hinge`` (one minus the class's probability). Sets are
label-conditional by default (Mondrian by the true class: each class gets its own coverage,
so a rarer or harder class such as meningioma is not covered at the expense of the others).
P-values are unsmoothed, so the coverage is never below the stated level on exchangeable data
and the answer for one slice does not depend on a random draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from crepes import ConformalClassifier


@dataclass(frozen=True)
class ConformalSets:
    """Calibration scores and their classes; turns probabilities into p-values and sets."""

    scores: np.ndarray  # non-conformity of each calibration slice for its true class
    labels: np.ndarray  # its true class index
    n_classes: int
    class_conditional: bool = True

    @classmethod
    def fit(cls, probs: np.ndarray, labels: np.ndarray, class_conditional: bool = True) -> ConformalSets:
        """Calibrate on held-out ``probs`` ``[n, K]`` with true ``labels`` ``[n]``."""
        from crepes.extras import hinge  # imported here: crepes brings pandas, which predictors need not load

        labels = np.asarray(labels, dtype=int)
        if class_conditional and len(np.unique(labels)) < probs.shape[1]:
            raise ValueError("class-conditional sets need calibration slices of every class")
        return cls(np.asarray(hinge(probs, np.arange(probs.shape[1]), labels), dtype=float), labels,
                   probs.shape[1], class_conditional)

    def _classifier(self) -> ConformalClassifier:
        from crepes import ConformalClassifier

        classifier = ConformalClassifier()
        classifier.fit(self.scores, bins=self.labels if self.class_conditional else None)
        return classifier

    def p_values(self, probs: np.ndarray) -> np.ndarray:
        """``[n, K]`` conformal p-value of each class for each slice."""
        scores = 1.0 - np.asarray(probs, dtype=float)  # crepes' hinge score of every class
        classifier = self._classifier()
        if not self.class_conditional:
            return np.asarray(classifier.predict_p(scores, smoothing=False))
        n = len(scores)
        return np.column_stack([np.asarray(classifier.predict_p(scores, bins=np.full(n, k), smoothing=False))[:, k]
                                for k in range(self.n_classes)])

    def sets(self, probs: np.ndarray, confidence: float) -> np.ndarray:
        """Boolean ``[n, K]``: the classes in each slice's set at ``confidence`` (e.g. 0.95)."""
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must lie in (0, 1), not {confidence}")
        return self.p_values(probs) >= 1 - confidence

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a JSON file (scores at full precision, so that sets are unchanged)."""
        return {"method": "crepes ConformalClassifier, hinge score, unsmoothed p-values",
                "class_conditional": self.class_conditional, "n_classes": self.n_classes,
                "scores": [float(s) for s in self.scores], "labels": [int(v) for v in self.labels]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConformalSets:
        """Inverse of :meth:`to_dict`; a malformed entry raises ``ValueError`` with one line."""
        try:
            scores = np.asarray(data["scores"], dtype=float)
            labels = np.asarray(data["labels"], dtype=int)
            n_classes = int(data["n_classes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"conformal calibration is malformed ({exc})") from exc
        if scores.ndim != 1 or scores.shape != labels.shape or not len(scores):
            raise ValueError("conformal calibration needs as many scores as labels, at least one")
        if labels.min() < 0 or labels.max() >= n_classes or not np.isfinite(scores).all():
            raise ValueError("conformal calibration holds labels out of range or non-finite scores")
        return cls(scores, labels, n_classes, bool(data.get("class_conditional", True)))


def set_names(members: np.ndarray, class_names: list[str]) -> list[list[str]]:
    """Boolean ``[n, K]`` sets -> the class names in each (possibly empty)."""
    return [[name for name, inside in zip(class_names, row) if inside] for row in members]


def coverage(members: np.ndarray, labels: np.ndarray) -> float:
    """Share of slices whose set holds their true class."""
    return float(members[np.arange(len(labels)), labels].mean())
