"""``calibration.json``: a temperature, a referral threshold, conformal sets and optionally an
out-of-distribution threshold for the models of one recipe, fitted by ``brain-tumor calibrate``
on a patient-wise CV's out-of-fold predictions."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from brain_tumor.config import recipe_fingerprint
from brain_tumor.evaluation.conformal import ConformalSets

log = logging.getLogger(__name__)

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


def check_calibration_fits(calibration: dict[str, Any], source: str, class_names: list[str], image_size: int,
                           recipe: dict[str, Any] | None) -> None:
    """Refuse, in one line, a calibration fitted for other classes, another size or another recipe."""
    if list(calibration.get("class_names", [])) != class_names:
        raise ValueError(f"{source}: calibrated for classes {calibration.get('class_names')}, "
                         f"the model has {class_names}")
    if calibration.get("image_size") != image_size:
        raise ValueError(f"{source}: fitted on {calibration.get('image_size')}-px models, this model reads "
                         f"{image_size} px (calibrate on a CV of this recipe)")
    if calibration.get("recipe") and recipe:
        mine = recipe_fingerprint(recipe)
        differ = [f"{k}={v!r} (this model: {mine.get(k)!r})" for k, v in calibration["recipe"].items()
                  if k in mine and mine[k] != v and k != "data.image_size"]  # checked above, on the weights
        if differ:
            raise ValueError(f"{source}: fitted on models of another recipe: {', '.join(differ)} "
                             "(calibrate on a CV of this recipe)")


def merged_ood(model_ood: dict[str, Any] | None, calibration_ood: dict[str, Any] | None,
               source: str) -> dict[str, Any] | None:
    """The model's OOD detector with the calibration's threshold where it was fitted for the same
    method and k (a warning, and the model's own threshold, otherwise)."""
    if calibration_ood and model_ood is not None:
        ood = calibration_ood
        if (ood["method"], int(ood["k"])) != (model_ood["method"], int(model_ood["k"])):
            log.warning("%s: OOD threshold for %s k=%s, the model's detector is %s k=%s: kept the model's",
                        source, ood["method"], ood["k"], model_ood["method"], model_ood["k"])
            return model_ood
        bank, fitted = len(model_ood["bank"]), ood.get("bank_size")
        if fitted and not 0.8 <= bank / fitted <= 1.25:
            log.warning("%s: OOD threshold fitted with banks of %d slices, this model's holds %d: kNN "
                        "distances shrink as a bank grows, so the flag rate will differ", source, fitted, bank)
        return {**model_ood, "threshold": float(ood["threshold"]), "flag_rate": ood.get("flag_rate"),
                "fitted_on": ood.get("fitted_on")}
    if calibration_ood:
        log.warning("%s: holds an OOD threshold, but the model has no OOD detector beside it "
                    "(brain-tumor ood): no OOD flag", source)
    return model_ood
