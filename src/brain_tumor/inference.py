"""``Predictor.from_checkpoint(path).predict(image)``: the one way the tool answers for a slice."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from brain_tumor.answers import NO_TUMOUR, Prediction, failed, no_tumour_answer, out_of_scope
from brain_tumor.calibration_file import check_calibration_fits, merged_ood
from brain_tumor.data.imageio import ImageReadError, expand_inputs, read_frames
from brain_tumor.data.preprocess import prepare_slice
from brain_tumor.evaluation.conformal import ConformalSets
from brain_tumor.exported_runtime import ExportedModel, open_export
from brain_tumor.gate import TumourGate
from brain_tumor.hardware import EngineChoice, ThreadChoice
from brain_tumor.model.backbone import (
    Preprocessing,
    forward_fp32_stem,
    has_tumour_map,
    tumour_evidence,
    tumour_map_logits,
)
from brain_tumor.scope import check_file_scope
from brain_tumor.training.checkpoint import load_checkpoint
from brain_tumor.transforms import Normalize
from brain_tumor.tumour_evidence import read_evidence_record

log = logging.getLogger(__name__)

# logits, OOD scores, P(no tumour), tumour evidence (see Predictor._outputs)
Outputs = tuple[torch.Tensor, list[float] | None, list[float] | None, list[float] | None]
TTA_MODES = ("none", "flip")  # test-time augmentation: "flip" averages the logits of the slice and its mirror


class Predictor:
    """A loaded model with its preprocessing, temperature and referral threshold."""

    def __init__(self, network: nn.Module, class_names: list[str], preprocessing: Preprocessing,
                 temperature: float = 1.0, refer_threshold: float | None = None) -> None:
        self.network = network.eval()
        self.class_names = class_names
        self.preprocessing = preprocessing
        self.normalize = Normalize(preprocessing)
        self.temperature = temperature
        self.refer_threshold = refer_threshold
        self.bf16 = False
        self.onnx: ExportedModel | None = None  # an ONNX export under ONNX Runtime or OpenVINO, if serving one
        self.engine: EngineChoice | None = None  # set by use_engine; None is plain PyTorch fp32
        self.ood: dict[str, Any] | None = None  # {"bank", "k", "threshold"}: see evaluation.ood
        self.compute: dict[str, Any] = {}  # what load_predictor chose, and why
        self.conformal: ConformalSets | None = None  # prediction sets (see use_calibration)
        self.set_confidence = 0.95
        self.calibration_source: str | None = None  # a calibration.json applied over the checkpoint's
        self.gate: TumourGate | None = None  # the "no tumour" gate (see use_gate)
        # the tumour map's threshold (brain_tumor.tumour_evidence), for a model trained with one
        self.evidence_record: dict[str, Any] | None = None
        self.recipe: dict[str, Any] | None = None  # the training config stored in the checkpoint
        self.tta = "none"  # see use_tta
        self.scope_check = True  # refuse images that are plainly not MRI slices (brain_tumor.scope)

    def use_tta(self, mode: str) -> Predictor:
        """``flip``: answer from the mean of the logits of each slice and its left-right mirror (the
        paper's augmentation flips, and an axial slice's mirror is a plausible slice). Done here on
        the uint8 batch, so that it holds for the PyTorch and the ONNX engines alike (a library
        wrapper such as ttach wraps only a torch module). OOD scores, the gate and the tumour map
        keep the unflipped slice, on which their thresholds were fitted."""
        if mode not in TTA_MODES:
            raise ValueError(f"tta: unknown {mode!r} ({' | '.join(TTA_MODES)})")
        self.tta = mode
        return self

    @torch.inference_mode()
    def with_tta(self, logits: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """``logits`` of ``batch`` (one pass) averaged with its mirror's, under a flip TTA."""
        if self.tta == "none":
            return logits
        mirrored = self._logits_once(batch.flip(-1))
        return (logits + mirrored) / 2

    def use_gate(self, gate: TumourGate, model_sha256: str | None, source: str) -> Predictor:
        """Answer ``no_tumour`` where ``gate`` (fitted on this model's features) says so."""
        if model_sha256 is not None and gate.model_sha256 != model_sha256:
            raise ValueError(f"{source}: fitted on another model's features (sha256 {gate.model_sha256[:12]}...)")
        self.gate = gate
        return self

    def use_calibration(self, calibration: dict[str, Any], source: str) -> Predictor:
        """Apply a ``calibration.json`` (temperature, referral threshold, conformal sets) fitted on a
        patient-wise CV's out-of-fold predictions; it replaces the checkpoint's own calibration."""
        check_calibration_fits(calibration, source, self.class_names, self.preprocessing.image_size, self.recipe)
        self.temperature = float(calibration["temperature"])
        self.refer_threshold = float(calibration["refer_threshold"])
        self.conformal = ConformalSets.from_dict(calibration["conformal"])
        self.set_confidence = float(calibration["confidence"])
        self.calibration_source = source
        self.ood = merged_ood(self.ood, calibration.get("ood"), source)
        return self

    def use_engine(self, engine: EngineChoice, threads: ThreadChoice | None = None) -> Predictor:
        """Serve logits from an exported ONNX model (int8 or fp32) under ONNX Runtime, from the fp32
        export under OpenVINO, or from PyTorch in fp32 or under bf16 autocast (channels-last either
        way); Grad-CAM always uses the PyTorch network."""
        self.onnx = open_export(engine, threads.intra_op if threads else None)
        self.bf16 = engine.engine == "pytorch" and engine.precision == "bf16-mixed"
        self.network.to(memory_format=torch.channels_last)
        self.engine = engine
        return self

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Predictor:
        """Rebuild everything from a self-describing checkpoint."""
        checkpoint = load_checkpoint(path)
        calibration = checkpoint.calibration or {}
        predictor = cls(checkpoint.build(), checkpoint.class_names, checkpoint.preprocessing,
                        float(calibration.get("temperature", 1.0)), calibration.get("refer_threshold"))
        predictor.ood = checkpoint.ood
        predictor.recipe = checkpoint.config
        record = read_evidence_record(checkpoint.meta)
        if record is not None and not has_tumour_map(predictor.network):
            raise ValueError(f"{path}: holds a tumour-evidence threshold but no tumour map to apply it to")
        if record is None and has_tumour_map(predictor.network):
            log.warning("%s: has a tumour map but no tumour-evidence threshold: the map gives no answer", path)
        predictor.evidence_record = record
        return predictor

    def to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """Float [0, 1] HxW slice -> uint8 ``[1, S, S]`` as the training cache holds it."""
        pre = self.preprocessing
        return torch.from_numpy(prepare_slice(image, pre.image_size, pre.pipeline).copy()).unsqueeze(0)

    def model_input(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, 1, S, S]`` -> the normalised network input."""
        return self.normalize(batch)

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw logits for uint8 ``[B, 1, S, S]`` (averaged over the test-time augmentation, if any)."""
        return self.with_tta(self._logits_once(batch), batch)

    def _logits_once(self, batch: torch.Tensor) -> torch.Tensor:
        if self.onnx is not None:
            return torch.from_numpy(self.onnx.logits(np.ascontiguousarray(batch.numpy())))
        return self._forward(batch)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = self.model_input(batch)
        if self.engine is not None:
            x = x.contiguous(memory_format=torch.channels_last)
        if not self.bf16:
            logits: torch.Tensor = self.network(x)
            return logits.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return forward_fp32_stem(self.network, x).float()

    @torch.inference_mode()
    def embed(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(penultimate features, logits)`` for uint8 ``[B, 1, S, S]`` (PyTorch path)."""
        captured = self.forward_parts(batch, ("fc",))
        return captured["fc"], captured["logits"]

    @torch.inference_mode()
    def forward_parts(self, batch: torch.Tensor, parts: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """One PyTorch forward pass: ``logits`` and, as asked in ``parts``, ``fc`` (the penultimate
        features) and ``evidence`` (the tumour map's, :func:`brain_tumor.model.tumour_evidence`)."""
        captured: dict[str, torch.Tensor] = {}
        handles = []
        if "fc" in parts:
            handles.append(self.network.get_submodule("fc").register_forward_hook(
                lambda m, i, o: captured.__setitem__("fc", i[0])))
        if "evidence" in parts:
            handles.append(self.network.get_submodule("layer3").register_forward_hook(
                lambda m, i, o: captured.__setitem__("layer3", o)))
        try:
            logits = self._forward(batch)
        finally:
            for handle in handles:
                handle.remove()
        out = {"logits": logits}
        if "fc" in parts:
            out["fc"] = captured["fc"].float()
        if "evidence" in parts:
            out["evidence"] = tumour_evidence(tumour_map_logits(self.network, captured["layer3"]))
        return out

    def _outputs(self, batch: torch.Tensor) -> Outputs:
        """Logits, plus OOD scores when the checkpoint carries an OOD detector, ``P(no tumour)``
        when a gate is loaded, and tumour evidence when the model has a tumour map (all from the
        same forward pass: PyTorch's, or an export's ``features`` and ``tumour_evidence`` outputs)."""
        features_needed = self.ood is not None or self.gate is not None
        evidence_needed = self.evidence_record is not None
        if not features_needed and not evidence_needed:
            return self.logits(batch), None, None, None
        if self.onnx is not None and self.onnx.has_features and (self.onnx.has_evidence or not evidence_needed):
            out = self.onnx.run(batch.numpy(), ["logits", "features"] + ["tumour_evidence"] * evidence_needed)
            logits, features = torch.from_numpy(out["logits"]), torch.from_numpy(out["features"])
            found = None if "tumour_evidence" not in out else torch.from_numpy(out["tumour_evidence"])
        else:  # PyTorch, or an export made before it carried these outputs
            captured = self.forward_parts(batch, ("fc", "evidence") if evidence_needed else ("fc",))
            logits, features, found = captured["logits"], captured["fc"], captured.get("evidence")
        evidence = None if found is None else [float(v) for v in found]
        logits = self.with_tta(logits, batch)
        scores = None
        if self.ood is not None:
            from brain_tumor.evaluation.ood import knn_scores

            scores = [float(v) for v in knn_scores(self.ood["bank"].float(), features, int(self.ood["k"]))]
        p_none = [float(v) for v in self.gate.p_no_tumour(features.numpy())] if self.gate is not None else None
        return logits, scores, p_none, evidence

    def answers(self, sources: list[str], logits: torch.Tensor, ood_scores: list[float] | None,
                p_no_tumour: list[float] | None = None, evidence: list[float] | None = None) -> list[Prediction]:
        """Predictions for rows of logits (with their OOD scores, ``P(no tumour)`` and tumour
        evidence); conformal sets for the batch at once."""
        calibrated = (logits.float() / self.temperature).softmax(-1)
        members = self.conformal.sets(calibrated.numpy(), self.set_confidence) if self.conformal else None
        return [self._answer(source, logits[i], calibrated[i], None if ood_scores is None else ood_scores[i],
                             None if members is None else members[i],
                             None if p_no_tumour is None else p_no_tumour[i],
                             None if evidence is None else evidence[i]) for i, source in enumerate(sources)]

    def _answer(self, source: str, logits: torch.Tensor, calibrated: torch.Tensor, ood_score: float | None,
                members: np.ndarray | None, p_none: float | None, evidence: float | None = None) -> Prediction:
        probs = logits.softmax(-1)
        k = int(probs.argmax())
        predicted, confidence = self.class_names[k], float(calibrated[k])
        refer = self.refer_threshold is not None and confidence < self.refer_threshold
        extra: dict[str, Any] = {}
        if ood_score is not None and self.ood is not None:
            unlike = ood_score > float(self.ood["threshold"])
            extra = {"ood_score": round(ood_score, 6), "out_of_distribution": unlike}
            refer = refer or unlike
        if members is not None:
            extra["prediction_set"] = "|".join(c for c, inside in zip(self.class_names, members) if inside)
        gate = self.gate.threshold if self.gate is not None else None
        mapped = float(self.evidence_record["threshold"]) if self.evidence_record is not None else None
        if p_none is not None and gate is not None:
            extra["p_no_tumour"] = round(p_none, 6)
        if evidence is not None and mapped is not None:
            extra["tumour_evidence"] = round(evidence, 6)
        if (none := no_tumour_answer(p_none, gate, evidence, mapped)) is not None:  # no tumour to classify
            predicted, (extra["no_tumour_from"], confidence) = NO_TUMOUR, none  # not calibrated
            refer = bool(extra.get("out_of_distribution", False))
            extra.pop("prediction_set", None)  # sets are over tumour classes: none applies
        return Prediction(source, {c: float(p) for c, p in zip(self.class_names, probs)}, predicted, confidence,
                          refer, self.refer_threshold is not None and predicted != NO_TUMOUR, extra=extra)

    def logits_for(self, images: torch.Tensor, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Logits ``[N, classes]`` of uint8 ``[N, 1, S, S]`` slices already prepared at this model's
        size and pipeline (as the training cache holds them), in batches: how runs are evaluated."""
        from tqdm import tqdm

        starts = range(0, len(images), batch_size)
        out = [self.logits(images[i:i + batch_size]).float() for i in tqdm(starts, desc="predicting",
                                                                           disable=not progress)]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.class_names)), np.float32)

    def predict(self, image: np.ndarray, source: str = "<array>") -> Prediction:
        """Predict one float [0, 1] grayscale slice."""
        return self.predict_batch(self.to_tensor(image)[None], [source])[0]

    def predict_files(self, paths: Iterable[str | Path], batch_size: int = 16,
                      skipped: list[Path] | None = None) -> Iterator[Prediction]:
        """Predict every file; unreadable ones yield a failed prediction, and images that are plainly
        not MRI slices an :func:`out_of_scope` one (with :attr:`scope_check`), and the batch goes
        on; unsupported files inside folders go to ``skipped``."""
        pending: list[tuple[str, torch.Tensor]] = []
        for path in expand_inputs(paths, skipped):
            try:
                for source, image in read_frames(path):
                    if (reason := self.out_of_scope_reason(path, image)) is not None:
                        yield out_of_scope(source, reason)
                    else:
                        pending.append((source, self.to_tensor(image)))
            except ImageReadError as exc:
                yield failed(str(path), str(exc))
            if len(pending) >= batch_size:
                yield from self._flush(pending)
                pending = []
        yield from self._flush(pending)

    def out_of_scope_reason(self, path: str | Path, image: np.ndarray) -> str | None:
        """Why the file's decoded slice is plainly not an MRI slice of a head, or None (always None
        with :attr:`scope_check` off): the one scope check of predict, evaluate --data and serve."""
        return check_file_scope(path, image).reason if self.scope_check else None

    def predict_batch(self, batch: torch.Tensor, sources: list[str]) -> list[Prediction]:
        """Answers for uint8 ``[B, 1, S, S]`` slices already prepared with :meth:`to_tensor`."""
        logits, scores, p_none, evidence = self._outputs(batch)
        return self.answers(sources, logits, scores, p_none, evidence)

    def _flush(self, pending: list[tuple[str, torch.Tensor]]) -> Iterator[Prediction]:
        if pending:
            yield from self.predict_batch(torch.stack([t for _, t in pending]), [s for s, _ in pending])
