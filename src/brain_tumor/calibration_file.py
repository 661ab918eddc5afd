"""``calibration.json``: a temperature, a referral threshold, conformal sets and optionally an
out-of-distribution threshold for the models of one recipe, fitted by ``brain-tumor calibrate``
on a patient-wise CV's out-of-fold predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from brain_tumor.evaluation.conformal import ConformalSets

CALIBRATION_FORMAT = "brain-tumor-calibration/1"


def load_calibration(path: str | Path) -> dict[str, Any]:
    """The checked contents of a calibration file; any problem is a ``ValueError`` of one line."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable calibration file ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
        raise ValueError(f"{path}: not a brain-tumor calibration file")
    for key in ("temperature", "refer_threshold", "confidence"):
        value = data.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"{path}: {key} must be a positive number")
    if not data["confidence"] < 1:
        raise ValueError(f"{path}: confidence must lie in (0, 1)")
    if not isinstance(data.get("class_names"), list):
        raise ValueError(f"{path}: class_names must be a list")
    try:
        ConformalSets.from_dict(data.get("conformal") or {})
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    ood = data.get("ood")
    if ood is not None and not (isinstance(ood, dict) and isinstance(ood.get("k"), int)
                                and isinstance(ood.get("threshold"), int | float) and ood.get("method")):
        raise ValueError(f"{path}: ood must hold method, k and threshold")
    return data
