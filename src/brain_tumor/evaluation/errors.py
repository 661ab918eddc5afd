"""Where a model's errors lie, patient by patient: are they spread over many new patients, or held
by a few whose slices it gets wrong again and again? Pure functions of labels, probabilities and
patient ids."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PatientErrors:
    """One patient's slices and the model's mistakes on them."""

    patient: str
    label: str
    n_slices: int
    n_wrong: int
    wrong_as: dict[str, int]  # predicted class -> wrong slices
    mean_confidence_wrong: float | None  # top-1 probability on the wrong slices
    patient_answer: str  # argmax of the mean of the slices' probabilities
    wrong_indices: list[int]  # rows of the input that are wrong, most confident first

    @property
    def share_wrong(self) -> float:
        return self.n_wrong / self.n_slices


def errors_by_patient(y: np.ndarray, probs: np.ndarray, groups: Sequence[str],
                      class_names: Sequence[str]) -> list[PatientErrors]:
    """Every patient, most wrong slices first (then by share wrong)."""
    predicted = probs.argmax(1)
    confidence = probs.max(1)
    groups_arr = np.asarray(groups)
    out = []
    for patient in dict.fromkeys(groups_arr.tolist()):
        rows = np.flatnonzero(groups_arr == patient)
        wrong = rows[predicted[rows] != y[rows]]
        wrong = wrong[np.argsort(-confidence[wrong], kind="stable")]
        label = int(np.bincount(y[rows]).argmax())
        out.append(PatientErrors(
            patient=str(patient), label=class_names[label], n_slices=len(rows), n_wrong=len(wrong),
            wrong_as={class_names[k]: int(n) for k, n in sorted(Counter(predicted[wrong].tolist()).items())},
            mean_confidence_wrong=float(confidence[wrong].mean()) if len(wrong) else None,
            patient_answer=class_names[int(probs[rows].mean(0).argmax())], wrong_indices=wrong.tolist()))
    return sorted(out, key=lambda p: (-p.n_wrong, -p.share_wrong, p.patient))


def concentration(patients: list[PatientErrors]) -> dict[str, float | int]:
    """How concentrated the errors are: patients with any error, the fewest patients that hold
    half (and 80%) of all wrong slices, and patients answered wrongly when their slices are pooled."""
    counts = sorted((p.n_wrong for p in patients), reverse=True)
    total = sum(counts)
    cumulative = np.cumsum(counts) if counts else np.zeros(0)

    def fewest(share: float) -> int:
        return int(np.searchsorted(cumulative, share * total) + 1) if total else 0

    return {"n_patients": len(patients), "n_slices": sum(p.n_slices for p in patients), "n_wrong_slices": total,
            "patients_with_an_error": sum(c > 0 for c in counts),
            "patients_holding_half_the_errors": fewest(0.5), "patients_holding_80pct_of_errors": fewest(0.8),
            "patients_answered_wrongly": sum(p.patient_answer != p.label for p in patients),
            "patients_mostly_wrong": sum(p.share_wrong > 0.5 for p in patients)}
