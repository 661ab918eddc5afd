"""``load_predictor``: a model with everything found beside it (ONNX exports, calibration, the
no-tumour gate), on the fastest path this machine has."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from brain_tumor.calibration_file import load_calibration
from brain_tumor.gate import load_gate
from brain_tumor.hardware import (
    EngineChoice,
    apply_threads,
    choose_precision,
    detect_cpu,
    resolve_engine,
    resolve_threads,
)
from brain_tumor.inference import Predictor
from brain_tumor.onnx_runtime import FINGERPRINT_KEY, OnnxPredictor, file_sha256
from brain_tumor.openvino_runtime import OpenVinoPredictor, openvino_available
from brain_tumor.package import is_package, resolve_reference


def find_exports(checkpoint: str | Path) -> tuple[str | None, str | None]:
    """``(int8, fp32)`` ONNX exports made from exactly this model: beside a checkpoint (where
    ``brain-tumor export`` writes them) or inside a model package; stale or foreign files are
    ignored."""
    folder, expected = model_folder(checkpoint), model_sha256(checkpoint)
    found: list[str | None] = []
    for name in ("model.int8.onnx", "model.onnx"):
        path = folder / name
        ok = False
        if path.is_file() and expected:
            try:
                ok = OnnxPredictor(path).metadata.get(FINGERPRINT_KEY) == expected
            except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own types)
                logging.getLogger(__name__).warning("%s: unreadable ONNX model, ignored (%s)", path, exc)
            if not ok:
                logging.getLogger(__name__).warning("%s: not exported from %s, ignored", path, checkpoint)
        found.append(str(path) if ok else None)
    return found[0], found[1]


def model_folder(checkpoint: str | Path) -> Path:
    """Where a model's companion files lie: a package's own folder, or a checkpoint's parent."""
    base = resolve_reference(checkpoint)
    return base if is_package(base) else base.parent


def find_beside(checkpoint: str | Path, name: str) -> Path | None:
    """A file ``name`` (``calibration.json``, ``gate.json``) beside a checkpoint or inside a model
    package, if there is one."""
    path = model_folder(checkpoint) / name
    return path if path.is_file() else None


def shortcut_for(checkpoint: str | Path) -> dict[str, Any] | None:
    """This model's entry in a ``shortcut.json`` (from ``brain-tumor shortcut-test``) beside it or
    in its package, matched by the checkpoint's SHA-256; None when there is none."""
    path = find_beside(checkpoint, "shortcut.json")
    digest = model_sha256(checkpoint)
    if path is None or digest is None:
        return None
    try:
        models = json.loads(path.read_text()).get("models", {})
    except (OSError, ValueError, AttributeError):
        logging.getLogger(__name__).warning("%s: unreadable, ignored", path)
        return None
    return next(({"name": name, **entry} for name, entry in models.items()
                 if isinstance(entry, dict) and entry.get("model_sha256") == digest), None)


def model_sha256(checkpoint: str | Path) -> str | None:
    """The SHA-256 of a checkpoint file, or the one a model package was exported from."""
    base = resolve_reference(checkpoint)
    if is_package(base):
        recorded = json.loads((base / "config.json").read_text()).get("package", {}).get("source_checkpoint_sha256")
        return str(recorded) if recorded else None
    return file_sha256(base) if base.is_file() else None


def load_predictor(checkpoint: str | Path, precision: str = "auto", engine: str = "auto",
                   onnx: str | Path | None = None, threads: int | None = None,
                   calibration: str | Path | None = None, gate: str | Path | None = None,
                   tta: str = "none") -> Predictor:
    """A predictor on the fastest path this machine has for this model (:mod:`brain_tumor.hardware`):
    an explicit ``onnx`` file, else the exports beside the checkpoint, else PyTorch at ``precision``.
    An ONNX export without an output this model needs is skipped: ``features`` for an OOD flag or
    a gate, ``tumour_evidence`` for a tumour map. ``calibration`` (default: a ``calibration.json``
    beside the model) adds conformal prediction sets and replaces the checkpoint's temperature and
    referral threshold;
    ``gate`` (default: a ``gate.json`` beside the model) adds the "no tumour" answer.
    ``tta``: test-time augmentation (:meth:`Predictor.use_tta`). What was chosen, and why, is in
    ``predictor.compute``."""
    predictor = Predictor.from_checkpoint(checkpoint).use_tta(tta)
    calibration_path = Path(calibration) if calibration is not None else find_beside(checkpoint, "calibration.json")
    if calibration_path is not None:
        predictor.use_calibration(load_calibration(calibration_path), str(calibration_path))
    gate_path = Path(gate) if gate is not None else find_beside(checkpoint, "gate.json")
    if gate_path is not None:
        predictor.use_gate(load_gate(gate_path), model_sha256(checkpoint), str(gate_path))
    thread_choice = resolve_threads(threads)
    apply_threads(thread_choice)
    precision_choice = choose_precision(precision, "cpu")
    int8: str | None
    fp32: str | None
    if onnx is not None:
        missing = _missing_outputs(predictor, onnx)
        if missing:
            raise ValueError(f"{onnx}: has no {missing} output, which this model needs (export it again with "
                             "brain-tumor export)")
        int8, fp32 = str(onnx), None
    elif engine == "pytorch":
        int8 = fp32 = None
    else:  # exports that lack an output this model needs are skipped (made before the exports carried it)
        found = find_exports(checkpoint)
        int8, fp32 = (p if p and not _missing_outputs(predictor, p) else None for p in found)
        if engine in ("onnx", "openvino") and any(found) and not (int8 or fp32):
            raise ValueError(f"{checkpoint}: its exports lack an output this model needs (the features for its OOD "
                             "flag or gate, or its tumour map's evidence): export it again with brain-tumor export")
    # A tumour map's threshold was fitted at training's precision: int8 and OpenVINO's own bf16 move
    # single slices across it (results/bench/engines-tumour-map-*), so auto takes neither for such a model
    exact = engine == "auto" and predictor.evidence_record is not None
    if exact:
        int8 = None
    if onnx is not None and engine == "openvino":  # the given file, under OpenVINO
        choice = resolve_engine("openvino", precision_choice, None, str(onnx), detect_cpu(), openvino_available())
    elif onnx is not None:
        choice = EngineChoice("onnx", "as exported", str(onnx), "ONNX model given explicitly")
    else:
        choice = resolve_engine(engine, precision_choice, int8, fp32, detect_cpu(), openvino_available() and not exact)
        if exact:
            choice = replace(choice, reason=choice.reason + "; not int8 or OpenVINO's own precision, which move the "
                             "tumour map's answers near its threshold")
    predictor.use_engine(choice, thread_choice)
    engine_record = choice.describe()
    if isinstance(predictor.onnx, OpenVinoPredictor):  # what OpenVINO runs at on this CPU
        engine_record["inference_precision"] = predictor.onnx.inference_precision
    predictor.compute = {"precision": precision_choice.describe(), "engine": engine_record,
                         "threads": thread_choice.describe(), "calibration": predictor.calibration_source,
                         "gate": str(gate_path) if gate_path is not None else None, "tta": tta}
    return predictor


def _missing_outputs(predictor: Predictor, export: str | Path) -> str | None:
    """The output the export at ``export`` lacks for this model: ``features`` for its OOD flag or
    gate, ``tumour_evidence`` for its tumour map; None when it has all it needs (opened only when
    the model needs more than logits)."""
    needs = {"features": predictor.ood is not None or predictor.gate is not None,
             "tumour_evidence": predictor.evidence_record is not None}
    if not any(needs.values()):
        return None
    names = OnnxPredictor(export).output_names
    missing = next((name for name, needed in needs.items() if needed and name not in names), None)
    if missing:
        logging.getLogger(__name__).warning("%s: has no %s output, which this model needs: not used "
                                            "(export it again with brain-tumor export)", export, missing)
    return missing
