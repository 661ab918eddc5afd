"""``Predictor.from_checkpoint(path).predict(image)``: the one way the tool answers for a slice."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from brain_tumor.data.imageio import SUPPORTED_SUFFIXES, ImageReadError, dicom_frame_count, read_slice
from brain_tumor.data.preprocess import prepare_slice
from brain_tumor.model.backbone import Preprocessing, forward_fp32_stem
from brain_tumor.training.checkpoint import load_model_checkpoint
from brain_tumor.transforms import Normalize


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


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given plus supported files inside given folders (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES)
        else:
            out.append(p)
    return out


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
        self.onnx: Any = None
        self.ood: dict[str, Any] | None = None  # {"bank", "k", "threshold"}: see evaluation.ood

    def use_fast_path(self, onnx_path: str | Path | None = None, bf16: bool = False) -> Predictor:
        """Serve logits from an exported (e.g. int8) ONNX model, or from PyTorch under bf16 autocast
        with channels-last; Grad-CAM still uses the PyTorch network."""
        from brain_tumor.export import OnnxPredictor

        self.onnx = OnnxPredictor(onnx_path) if onnx_path else None
        self.bf16 = bf16
        if bf16:
            self.network.to(memory_format=torch.channels_last)
        return self

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Predictor:
        """Rebuild everything from a self-describing checkpoint."""
        network, meta = load_model_checkpoint(path)
        pre = meta["preprocessing"]
        calibration = meta.get("calibration") or {}
        preprocessing = Preprocessing(tuple(pre["mean"]), tuple(pre["std"]),  # type: ignore[arg-type]
                                      pre["image_size"], pre.get("pipeline", "paper"))
        predictor = cls(network, meta["class_names"], preprocessing,
                        float(calibration.get("temperature", 1.0)), calibration.get("refer_threshold"))
        predictor.ood = meta.get("ood")
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
        """Raw logits for uint8 ``[B, 1, S, S]``."""
        if self.onnx is not None:
            return torch.from_numpy(self.onnx.logits(batch.numpy()))
        return self._forward(batch)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = self.model_input(batch)
        if not self.bf16:
            return self.network(x).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return forward_fp32_stem(self.network, x.contiguous(memory_format=torch.channels_last)).float()

    @torch.inference_mode()
    def embed(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(penultimate features, logits)`` for uint8 ``[B, 1, S, S]`` (PyTorch path)."""
        captured: list[torch.Tensor] = []
        handle = self.network.fc.register_forward_hook(lambda m, i, o: captured.append(i[0]))
        try:
            logits = self._forward(batch)
        finally:
            handle.remove()
        return captured[0].float(), logits

    def _outputs(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits, plus OOD scores when the checkpoint carries an OOD detector (PyTorch path)."""
        if self.ood is None or self.onnx is not None:
            return self.logits(batch), None
        from brain_tumor.evaluation.ood import knn_scores

        features, logits = self.embed(batch)
        return logits, knn_scores(self.ood["bank"].float(), features, int(self.ood["k"]))

    def answer(self, source: str, logits: torch.Tensor, ood_score: float | None = None) -> Prediction:
        """Turn one row of logits (and its OOD score) into a :class:`Prediction`."""
        probs = logits.softmax(-1)
        calibrated = (logits / self.temperature).softmax(-1)
        k = int(probs.argmax())
        confidence = float(calibrated[k])
        refer = self.refer_threshold is not None and confidence < self.refer_threshold
        extra: dict[str, Any] = {}
        if ood_score is not None and self.ood is not None:
            unlike = ood_score > float(self.ood["threshold"])
            extra = {"ood_score": round(ood_score, 6), "out_of_distribution": unlike}
            refer = refer or unlike
        return Prediction(source, {c: float(p) for c, p in zip(self.class_names, probs)},
                          self.class_names[k], confidence, refer, self.refer_threshold is not None, extra=extra)

    def predict(self, image: np.ndarray, source: str = "<array>") -> Prediction:
        """Predict one float [0, 1] grayscale slice."""
        logits, scores = self._outputs(self.to_tensor(image)[None])
        return self.answer(source, logits[0], None if scores is None else float(scores[0]))

    def read(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        """``(source name, slice)`` pairs of a file; one per frame for multi-frame DICOM."""
        if path.suffix.lower() in (".dcm", ".dicom") and path.is_file() and path.stat().st_size:
            try:
                frames = dicom_frame_count(path)
            except Exception as exc:  # noqa: BLE001
                raise ImageReadError(f"{path}: not a readable DICOM file ({exc})") from exc
            if frames > 1:
                for f in range(frames):
                    yield f"{path}#frame{f}", read_slice(path, frame=f)
                return
        yield str(path), read_slice(path)

    def predict_files(self, paths: Iterable[str | Path], batch_size: int = 16) -> Iterator[Prediction]:
        """Predict every file; unreadable ones yield a failed prediction and the batch goes on."""
        pending: list[tuple[str, torch.Tensor]] = []
        for path in expand_inputs(paths):
            try:
                for source, image in self.read(path):
                    pending.append((source, self.to_tensor(image)))
            except ImageReadError as exc:
                yield failed(str(path), str(exc))
            if len(pending) >= batch_size:
                yield from self._flush(pending)
                pending = []
        yield from self._flush(pending)

    def _flush(self, pending: list[tuple[str, torch.Tensor]]) -> Iterator[Prediction]:
        if not pending:
            return
        logits, scores = self._outputs(torch.stack([t for _, t in pending]))
        for i, ((source, _), row) in enumerate(zip(pending, logits)):
            yield self.answer(source, row, None if scores is None else float(scores[i]))
