"""Calibration, abstention and Grad-CAM localisation of a trained run, plus its model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from brain_tumor import atomic
from brain_tumor.evaluation import calibration as cal
from brain_tumor.evaluation.plots import plot_overlay_grid, plot_reliability, plot_risk_coverage
from brain_tumor.explain.gradcam import grad_cam, overlay
from brain_tumor.explain.localisation import energy_in_box, pointing_hit
from brain_tumor.inference import Predictor


def calibration_report(val_logits: np.ndarray, val_labels: np.ndarray, test_logits: np.ndarray,
                       test_labels: np.ndarray, target_risk: float, out_dir: Path) -> dict[str, Any]:
    """Fit T and the referral threshold on validation; measure ECE and abstention on test."""
    temperature = cal.fit_temperature(val_logits, val_labels)
    before, after = cal.softmax(test_logits), cal.softmax(test_logits, temperature)
    ece_before, ece_after = (cal.expected_calibration_error(p, test_labels) for p in (before, after))
    val_probs = cal.softmax(val_logits, temperature)
    threshold = cal.threshold_for_risk(val_probs.max(1), val_probs.argmax(1) == val_labels, target_risk)
    conf, correct = after.max(1), after.argmax(1) == test_labels
    answered = conf >= threshold
    _, coverage, risk = cal.risk_coverage(conf, correct)
    plot_reliability(_rel(before, test_labels), _rel(after, test_labels), ece_before, ece_after,
                     out_dir / "reliability.png")
    risk_answered = float(1 - correct[answered].mean()) if answered.any() else 0.0
    plot_risk_coverage(coverage, risk, (float(answered.mean()), risk_answered), out_dir / "risk_coverage.png",
                       target_risk)
    return {"temperature": temperature, "ece_before": ece_before, "ece_after": ece_after,
            "nll_before": cal.negative_log_likelihood(before, test_labels),
            "nll_after": cal.negative_log_likelihood(after, test_labels),
            "target_risk": target_risk, "refer_threshold": threshold,
            "test_referred_rate": float(1 - answered.mean()), "test_error_answered": risk_answered,
            "test_error_all": float(1 - correct.mean())}


def _rel(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = cal.reliability(probs, labels)
    return r.confidence, r.accuracy, r.count


def localisation_report(predictor: Predictor, images: torch.Tensor, labels: np.ndarray,
                        boxes: list[tuple[float, float, float, float] | None], out_dir: Path,
                        tolerance_px: int = 15, batch_size: int = 16) -> dict[str, Any]:
    """Pointing game and energy-in-box on correctly classified slices, per class; a gallery."""
    pred = predictor.logits_for(images, batch_size).argmax(1)
    cams = []  # Grad-CAM needs gradients: its own loop, outside the inference path
    for start in tqdm(range(0, len(images), batch_size), desc="grad-cam"):
        cams.append(grad_cam(predictor.network, predictor.normalize, images[start:start + batch_size]))
    cam = np.concatenate(cams)
    keep = [i for i in range(len(labels)) if boxes[i] is not None and pred[i] == labels[i]]
    hits = np.array([pointing_hit(cam[i], boxes[i], tolerance_px) for i in keep])  # type: ignore[arg-type]
    energy = np.array([energy_in_box(cam[i], boxes[i]) for i in keep])  # type: ignore[arg-type]
    kept_labels = labels[keep]
    per_class = {}
    for k, name in enumerate(predictor.class_names):
        sel = kept_labels == k
        per_class[name] = {"n": int(sel.sum()), "pointing_game": float(hits[sel].mean()) if sel.any() else None,
                           "energy_in_box": float(energy[sel].mean()) if sel.any() else None}
    order = np.argsort(energy)
    picks = [keep[i] for i in order[-6:][::-1]] + [keep[i] for i in order[:6]]
    titles = [f"{predictor.class_names[labels[i]]} E={energy[keep.index(i)]:.2f}" for i in picks]
    plot_overlay_grid([overlay(images[i, 0].numpy(), cam[i]) for i in picks], titles,
                      [boxes[i] for i in picks], out_dir / "gradcam_gallery.png",
                      title="Grad-CAM: 6 best (top) and 6 worst (bottom) energy-in-box, correct slices")
    return {"tolerance_px": tolerance_px, "n_correct_with_box": len(keep),
            "pointing_game": float(hits.mean()) if len(hits) else None,
            "energy_in_box": float(energy.mean()) if len(energy) else None, "per_class": per_class}


def run_trust(checkpoint: Path, run_dir: Path, images: torch.Tensor, labels: torch.Tensor,
              boxes: list[tuple[float, float, float, float] | None], val: list[int], test: list[int],
              target_risk: float = 0.02, tolerance_px: int = 15, protocol: str | None = None) -> dict[str, Any]:
    """Calibrate and choose the referral threshold on ``val``; measure on ``test``; Grad-CAM;
    write ``trust.json``, ``model_card.md`` and the calibration (``calibration.json``, also beside
    the model unless one fitted out of fold is there; see :func:`save_calibration`). The
    checkpoint is never rewritten. ``protocol``: how test was split from training, default the
    paper's slice-level split; the context shortcut comes from a ``shortcut.json`` beside the
    model measured on it, if any."""
    import json

    from brain_tumor.evaluation.model_card import model_card
    from brain_tumor.evaluation.run_eval import write_json
    from brain_tumor.model_loading import shortcut_for

    predictor = Predictor.from_checkpoint(checkpoint)
    shortcut = shortcut_for(checkpoint)
    out_dir = run_dir / "trust"
    out_dir.mkdir(parents=True, exist_ok=True)
    y = labels.numpy()
    val_logits, test_logits = (predictor.logits_for(images[part], batch_size=64) for part in (val, test))
    calibration = calibration_report(val_logits, y[val], test_logits, y[test], target_risk, out_dir)
    localisation = localisation_report(predictor, images[test], y[test], [boxes[i] for i in test], out_dir,
                                       tolerance_px)
    trust = {"calibration": calibration, "localisation": localisation}
    write_json(trust, out_dir / "trust.json")
    save_calibration(checkpoint, predictor, val_logits, y[val], calibration, out_dir)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        metrics["image_size"] = predictor.preprocessing.image_size
        atomic.write_text(out_dir / "model_card.md", model_card(run_dir.name, metrics, trust, protocol, shortcut))
    return trust


def save_calibration(checkpoint: Path, predictor: Predictor, val_logits: np.ndarray, val_labels: np.ndarray,
                     calibration: dict[str, Any], out_dir: Path, confidence: float = 0.95) -> Path | None:
    """Write the validation calibration as a ``calibration.json`` (temperature, referral threshold,
    conformal sets at ``confidence``) into ``out_dir`` and beside the model, where ``predict``,
    ``evaluate`` and ``serve`` find it. One already beside the model that was fitted on a CV's
    out-of-fold predictions (``brain-tumor calibrate``: thousands of slices, not a few hundred)
    is kept. Returns the file beside the model, or None where none was written there."""
    import logging

    from brain_tumor.atomic import write_json
    from brain_tumor.calibration_file import CALIBRATION_FORMAT, load_calibration
    from brain_tumor.config import recipe_fingerprint
    from brain_tumor.evaluation.conformal import ConformalSets
    from brain_tumor.model_loading import model_folder
    from brain_tumor.package import is_package

    log = logging.getLogger(__name__)
    scaled = cal.softmax(val_logits, calibration["temperature"])
    by_class = len(np.unique(val_labels)) == scaled.shape[1]  # class-conditional sets need every class
    data = {"format": CALIBRATION_FORMAT, "class_names": list(predictor.class_names),
            "image_size": predictor.preprocessing.image_size,
            "fitted_on": {"source": "validation", "n_slices": int(len(val_labels)),
                          "protocol": "the validation slices of this model's own training run"},
            "temperature": float(calibration["temperature"]), "refer_threshold": float(calibration["refer_threshold"]),
            "target_risk": float(calibration["target_risk"]), "confidence": confidence,
            "conformal": ConformalSets.fit(scaled, val_labels, by_class).to_dict(),
            "recipe": recipe_fingerprint(predictor.recipe or {})}
    write_json(data, out_dir / "calibration.json")
    folder = model_folder(checkpoint)
    if is_package(folder):
        log.info("%s is a model package (read-only): calibration written to %s only", folder, out_dir)
        return None
    beside = folder / "calibration.json"
    if beside.is_file():
        try:
            source = (load_calibration(beside).get("fitted_on") or {}).get("source")
        except ValueError:
            source = "validation"  # an unreadable file is replaced
        if source != "validation":
            log.warning("%s: kept (fitted on %s); this run's validation calibration is in %s", beside, source,
                        out_dir / "calibration.json")
            return None
    write_json(data, beside)
    return beside
