"""One answer per patient or study: slice predictions grouped and their probabilities averaged.

Averaging the slices' probabilities is what the patient-level accuracy of ``cv`` measures
(:func:`brain_tumor.evaluation.statistics.patient_level`), so the figure there holds for this answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brain_tumor.answers import NO_TUMOUR, Prediction

GROUP_BY = ("none", "folder", "study")


def dicom_study(path: Path) -> str | None:
    """``PatientID/StudyInstanceUID`` of a DICOM file (header only), or ``None``."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001  (pydicom raises many types for non-DICOM bytes)
        return None
    study = getattr(ds, "StudyInstanceUID", None)
    patient = getattr(ds, "PatientID", None)
    return f"{patient or '?'}/{study}" if study else None


def group_key(source: str, group_by: str) -> str:
    """The group of one prediction's source (``path`` or ``path#frameN``): its folder, or for
    ``study`` its DICOM study (files that are not DICOM fall back to their folder)."""
    if group_by not in GROUP_BY:
        raise ValueError(f"group-by: unknown {group_by!r} ({' | '.join(GROUP_BY)})")
    path = Path(source.split("#frame")[0])
    if group_by == "study" and path.suffix.lower() in (".dcm", ".dicom"):
        study = dicom_study(path)
        if study:
            return study
    return str(path.parent)


@dataclass(frozen=True)
class GroupAnswer:
    """The answer for one patient or study."""

    group: str
    n_slices: int
    probabilities: dict[str, float]
    predicted: str
    confidence: float
    agreement: float  # share of the slices whose own answer is the group's
    refer: bool
    refer_reasons: tuple[str, ...]

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {"group": self.group, "n_slices": self.n_slices, "predicted": self.predicted,
                               "confidence": round(self.confidence, 6), "agreement": round(self.agreement, 4),
                               "refer": self.refer, "refer_reasons": "; ".join(self.refer_reasons)}
        out.update({f"p_{k}": round(v, 6) for k, v in self.probabilities.items()})
        return out


def aggregate(predictions: Sequence[Prediction], keys: Sequence[str]) -> list[GroupAnswer]:
    """Group answers by ``keys`` (failed predictions are left out) in order of first appearance.

    The group's probabilities are the mean of its slices' probabilities (of the slices a no-tumour
    gate let through, when there is one). The group is ``no_tumour`` when most of its slices are;
    its confidence is then the share of such slices. It is referred when some slices show a
    tumour and others none, when most
    of its slices are referred (each by the model's validated confidence threshold or its OOD
    flag) or when its slices disagree (fewer than half name the group's class); a threshold for
    the group's own confidence would need validation on groups, which no checkpoint carries."""
    groups: dict[str, list[Prediction]] = {}
    for p, key in zip(predictions, keys):
        if not p.error:
            groups.setdefault(key, []).append(p)
    answers = []
    for key, members in groups.items():
        names = list(members[0].probabilities)
        tumour = [m for m in members if m.predicted != NO_TUMOUR]  # a gate's "no tumour" slices name no class
        probs = np.asarray([[m.probabilities[c] for c in names] for m in (tumour or members)]).mean(0)
        k = int(probs.argmax())
        if len(tumour) * 2 < len(members):  # most slices hold no tumour: so does the group
            predicted, confidence = NO_TUMOUR, 1 - len(tumour) / len(members)
        else:
            predicted, confidence = names[k], float(probs[k])
        agreement = float(np.mean([m.predicted == predicted for m in members]))
        reasons = []
        if tumour and len(tumour) < len(members):
            reasons.append(f"{len(members) - len(tumour)} of {len(members)} slices show no tumour")
        referred = sum(m.refer for m in members)
        if referred * 2 > len(members):
            reasons.append(f"{referred} of {len(members)} slices referred")
        if agreement < 0.5:
            reasons.append(f"slices disagree ({agreement:.0%} name {predicted})")
        answers.append(GroupAnswer(key, len(members), dict(zip(names, map(float, probs))), predicted, confidence,
                                   agreement, bool(reasons), tuple(reasons)))
    return answers
