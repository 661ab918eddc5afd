"""The "no tumour" gate: a logistic regression on a tumour model's penultimate features.

The tumour model only knows three tumour classes; the gate answers the question before it:
is there a tumour in this slice at all? It is fitted by ``brain-tumor no-tumour-gate`` for one
model (its features), stored beside it as ``gate.json`` (plain numbers, nothing unpickled) and
refused for any other model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GATE_FORMAT = "brain-tumor-gate/1"


@dataclass(frozen=True)
class TumourGate:
    """``P(no tumour)`` from standardised features; ``no tumour`` when it reaches ``threshold``."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float
    model_sha256: str

    def p_no_tumour(self, features: np.ndarray) -> np.ndarray:
        """``[n]`` probability that each slice holds no tumour."""
        z = ((np.asarray(features, dtype=np.float64) - self.mean) / self.scale) @ self.coef + self.intercept
        p: np.ndarray = 1.0 / (1.0 + np.exp(-z))
        return p

    def to_dict(self) -> dict[str, Any]:
        return {"format": GATE_FORMAT, "model_sha256": self.model_sha256, "threshold": self.threshold,
                "intercept": self.intercept, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "gate") -> TumourGate:
        """Inverse of :meth:`to_dict`; anything malformed is a ``ValueError`` of one line."""
        if not isinstance(data, dict) or data.get("format") != GATE_FORMAT:
            raise ValueError(f"{source}: not a brain-tumor no-tumour gate")
        try:
            mean, scale, coef = (np.asarray(data[k], dtype=np.float64) for k in ("mean", "scale", "coef"))
            gate = cls(mean, scale, coef, float(data["intercept"]), float(data["threshold"]),
                       str(data["model_sha256"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source}: malformed gate ({exc})") from exc
        if not (mean.ndim == 1 and mean.shape == scale.shape == coef.shape and len(mean)):
            raise ValueError(f"{source}: mean, scale and coef must be vectors of one length")
        if not (np.isfinite(mean).all() and np.isfinite(coef).all() and (scale > 0).all()
                and 0 < gate.threshold < 1 and np.isfinite(gate.intercept)):
            raise ValueError(f"{source}: non-finite weights, non-positive scale or threshold outside (0, 1)")
        return gate


def fit_gate(features: np.ndarray, no_tumour: np.ndarray, model_sha256: str, threshold: float = 0.5,
             c: float = 0.1, seed: int = 0) -> TumourGate:
    """Standardise, then an L2 logistic regression with balanced class weights (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features)
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
    model.fit(scaler.transform(features), np.asarray(no_tumour, dtype=int))
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    return TumourGate(scaler.mean_.astype(np.float64), scale.astype(np.float64), model.coef_[0].astype(np.float64),
                      float(model.intercept_[0]), threshold, model_sha256)


def load_gate(path: str | Path) -> TumourGate:
    """A ``gate.json``; one-line ``ValueError`` if unreadable or malformed."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable gate file ({exc})") from exc
    return TumourGate.from_dict(data, str(path))
