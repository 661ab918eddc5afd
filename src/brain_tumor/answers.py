"""What the tool answers for one slice: a :class:`Prediction`, or a slot for a file it could not
read or refused as out of scope."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from brain_tumor.scope import refusal_message

NO_TUMOUR = "no_tumour"  # the answer when a loaded gate finds no tumour in the slice


@dataclass(frozen=True)
class Prediction:
    """One answer: probabilities, the class, calibrated confidence and whether to refer."""

    source: str
    probabilities: dict[str, float]
    predicted: str
    confidence: float
    refer: bool
    calibrated: bool
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """Flat dict for CSV/JSON output."""
        out: dict[str, Any] = {"path": self.source, "predicted": self.predicted,
                               "confidence": round(self.confidence, 6), "refer": self.refer,
                               "calibrated": self.calibrated, "error": self.error or ""}
        out.update({f"p_{k}": round(v, 6) for k, v in self.probabilities.items()})
        out.update(self.extra)
        return out


def failed(source: str, message: str) -> Prediction:
    """A prediction slot for a file that could not be read."""
    return Prediction(source, {}, "", 0.0, True, False, error=message)


def out_of_scope(source: str, reason: str) -> Prediction:
    """A prediction slot for an image refused before the model: not an MRI slice of a head
    (:mod:`brain_tumor.scope`); ``extra["out_of_scope"]`` holds the reason."""
    return Prediction(source, {}, "", 0.0, True, False, error=refusal_message(reason), extra={"out_of_scope": reason})


def no_tumour_answer(p_no_tumour: float | None, gate_threshold: float | None, evidence: float | None,
                     evidence_threshold: float | None) -> tuple[str, float] | None:
    """Which check answers "no tumour", with its (uncalibrated) confidence, or None: the gate first
    (``P(no tumour)`` at or above its threshold), then the tumour map (its evidence below its
    threshold: it finds no tumour tissue anywhere). A check without its threshold does not answer."""
    if p_no_tumour is not None and gate_threshold is not None and p_no_tumour >= gate_threshold:
        return "gate", p_no_tumour
    if evidence is not None and evidence_threshold is not None and evidence < evidence_threshold:
        return "tumour_map", 1.0 - evidence
    return None
