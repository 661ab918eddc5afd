"""Calibration, referral and conformal sets fitted on patient-wise out-of-fold predictions.

A patient-wise CV scores every slice with a model that never saw its patient. Those
out-of-fold (OOF) probabilities are the honest material to fit a temperature, a referral
threshold and conformal sets on: thousands of slices instead of one run's small validation
split. How well each transfers is measured by cross-fitting: for each fold, everything is
fitted on the other folds' OOF predictions (other models, other patients) and judged on this
fold's. The calibration a user deploys is then fitted on all folds together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from brain_tumor.calibration_file import CALIBRATION_FORMAT
from brain_tumor.evaluation import calibration as cal
from brain_tumor.evaluation.conformal import ConformalSets, coverage
from brain_tumor.evaluation.statistics import bootstrap_ci, bootstrap_mean


@dataclass(frozen=True)
class OutOfFold:
    """Pooled OOF predictions: one row per slice, with its fold and patient."""

    probs: np.ndarray  # [n, K] softmax probabilities of the fold's model
    labels: np.ndarray  # [n] true class index
    folds: np.ndarray  # [n] fold number
    patients: np.ndarray  # [n] patient id (str)


@dataclass(frozen=True)
class Fitted:
    """Everything fitted on one set of OOF predictions."""

    temperature: float
    refer_threshold: float
    conformal: ConformalSets


def log_probs(probs: np.ndarray) -> np.ndarray:
    """Logits up to a per-row constant (which softmax ignores), from probabilities."""
    out: np.ndarray = np.log(np.clip(probs, 1e-12, 1.0))
    return out


def fit(probs: np.ndarray, labels: np.ndarray, target_risk: float, class_conditional: bool = True) -> Fitted:
    """Temperature by NLL, the referral threshold for ``target_risk`` error among answered, and
    conformal sets on the temperature-scaled probabilities."""
    temperature = cal.fit_temperature(log_probs(probs), labels)
    scaled = cal.softmax(log_probs(probs), temperature)
    threshold = cal.threshold_for_risk(scaled.max(1), scaled.argmax(1) == labels, target_risk)
    return Fitted(temperature, threshold, ConformalSets.fit(scaled, labels, class_conditional))


@dataclass(frozen=True)
class CrossFitted:
    """Per-slice results when each fold is judged by what the other folds fitted."""

    scaled: np.ndarray  # [n, K] probabilities after the other folds' temperature
    answered: np.ndarray  # [n] confidence >= the other folds' referral threshold
    members: np.ndarray  # [n, K] conformal sets from the other folds' calibration
    per_fold: list[dict[str, Any]]


def cross_fit(oof: OutOfFold, target_risk: float, confidence: float, class_conditional: bool = True) -> CrossFitted:
    """Fit on all folds but one, apply to that one, for every fold."""
    scaled = np.zeros_like(oof.probs)
    answered = np.zeros(len(oof.labels), dtype=bool)
    members = np.zeros_like(oof.probs, dtype=bool)
    per_fold = []
    for fold in np.unique(oof.folds):
        test, train = oof.folds == fold, oof.folds != fold
        fitted = fit(oof.probs[train], oof.labels[train], target_risk, class_conditional)
        scaled[test] = cal.softmax(log_probs(oof.probs[test]), fitted.temperature)
        answered[test] = scaled[test].max(1) >= fitted.refer_threshold
        members[test] = fitted.conformal.sets(scaled[test], confidence)
        y = oof.labels[test]
        per_fold.append({
            "fold": int(fold), "n": int(test.sum()), "temperature": fitted.temperature,
            "refer_threshold": fitted.refer_threshold,
            "ece_before": cal.expected_calibration_error(oof.probs[test], y),
            "ece_after": cal.expected_calibration_error(scaled[test], y),
            "answered": float(answered[test].mean()),
            "accuracy_answered": _accuracy(scaled[test][answered[test]], y[answered[test]]),
            "set_coverage": coverage(members[test], y), "mean_set_size": float(members[test].sum(1).mean()),
        })
    return CrossFitted(scaled, answered, members, per_fold)


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float | None:
    return float((probs.argmax(1) == labels).mean()) if len(labels) else None


def _ci(point_low_high: tuple[float, float, float]) -> dict[str, float]:
    point, low, high = point_low_high
    return {"value": point, "low": low, "high": high}


def cross_fit_summary(oof: OutOfFold, result: CrossFitted, class_names: list[str], confidence: float,
                      target_risk: float, n_boot: int = 2000) -> dict[str, Any]:
    """Pooled cross-fitted figures with 95% CIs resampling patients."""
    y, groups = oof.labels, oof.patients.tolist()

    def ece(labels: np.ndarray, probs: np.ndarray) -> float:
        return cal.expected_calibration_error(probs, labels)

    hit = result.members[np.arange(len(y)), y].astype(float)
    size = result.members.sum(1)
    correct = result.scaled.argmax(1) == y
    answered_correct = np.where(result.answered, correct, np.nan)
    per_class = {}
    for k, name in enumerate(class_names):
        sel = y == k
        per_class[name] = {"n": int(sel.sum()), "coverage": float(hit[sel].mean()),
                           "mean_set_size": float(size[sel].mean())}
    return {
        "protocol": "cross-fitted over patient-wise folds: each fold judged by what the other folds' "
                    "out-of-fold predictions fitted",
        "n_slices": int(len(y)), "n_patients": len(set(groups)), "folds": result.per_fold,
        "ece_before": _ci(bootstrap_ci(ece, y, oof.probs, groups, n_boot)),
        "ece_after": _ci(bootstrap_ci(ece, y, result.scaled, groups, n_boot)),
        "nll_before": cal.negative_log_likelihood(oof.probs, y),
        "nll_after": cal.negative_log_likelihood(result.scaled, y),
        "ece_per_fold": {"mean_before": float(np.mean([f["ece_before"] for f in result.per_fold])),
                         "mean_after": float(np.mean([f["ece_after"] for f in result.per_fold])),
                         "worse_after": sum(f["ece_after"] > f["ece_before"] for f in result.per_fold)},
        "coverage_per_fold": {"min": min(f["set_coverage"] for f in result.per_fold),
                              "max": max(f["set_coverage"] for f in result.per_fold)},
        "accuracy": float(correct.mean()),
        "referral": {"target_risk": target_risk, "answered": _ci(bootstrap_mean(result.answered, groups, n_boot)),
                     "accuracy_answered": float(np.nanmean(answered_correct)) if result.answered.any() else None},
        "conformal": {"confidence": confidence, "coverage": _ci(bootstrap_mean(hit, groups, n_boot)),
                      "coverage_minus_stated": float(hit.mean() - confidence),
                      "mean_set_size": float(size.mean()),
                      "set_size_shares": {str(s): float((size == s).mean()) for s in range(len(class_names) + 1)},
                      "per_class": per_class},
    }


def deployable(oof: OutOfFold, class_names: list[str], image_size: int, target_risk: float, confidence: float,
               source: str, class_conditional: bool = True) -> dict[str, Any]:
    """The calibration a user applies to a model of this recipe: fitted on every OOF slice."""
    fitted = fit(oof.probs, oof.labels, target_risk, class_conditional)
    return {"format": CALIBRATION_FORMAT, "class_names": list(class_names), "image_size": image_size,
            "fitted_on": {"source": source, "n_slices": int(len(oof.labels)),
                          "n_patients": len(set(oof.patients.tolist())),
                          "protocol": "out-of-fold predictions of a patient-wise CV"},
            "temperature": fitted.temperature, "refer_threshold": fitted.refer_threshold,
            "target_risk": target_risk, "confidence": confidence, "conformal": fitted.conformal.to_dict()}

