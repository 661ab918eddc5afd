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
from brain_tumor.hardware import (
    EngineChoice,
    ThreadChoice,
    apply_threads,
    choose_precision,
    resolve_engine,
    resolve_threads,
)
from brain_tumor.model.backbone import Preprocessing, forward_fp32_stem
from brain_tumor.onnx_runtime import OnnxPredictor, file_sha256
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


def expand_inputs(paths: Iterable[str | Path], skipped: list[Path] | None = None) -> list[Path]:
    """Files as given plus supported files inside given folders (sorted); other files found in the
    folders are appended to ``skipped`` so that the caller can report them."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = len(out)
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES:
                    out.append(f)
                elif not f.is_dir() and skipped is not None and not f.name.startswith("."):
                    skipped.append(f)
            if len(out) == found and skipped is not None:
                skipped.append(p)  # a folder given with nothing to read in it
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
        self.onnx: OnnxPredictor | None = None
        self.engine: EngineChoice | None = None  # set by use_engine; None is plain PyTorch fp32
        self.ood: dict[str, Any] | None = None  # {"bank", "k", "threshold"}: see evaluation.ood
        self.compute: dict[str, Any] = {}  # what load_predictor chose, and why

    def use_engine(self, engine: EngineChoice, threads: ThreadChoice | None = None) -> Predictor:
        """Serve logits from an exported ONNX model (int8 or fp32) under ONNX Runtime, or from
        PyTorch in fp32 or under bf16 autocast (channels-last either way); Grad-CAM always uses
        the PyTorch network."""
        self.onnx = OnnxPredictor(engine.onnx_path, threads.intra_op if threads else None) \
            if engine.engine == "onnx" and engine.onnx_path else None
        self.bf16 = engine.engine == "pytorch" and engine.precision == "bf16-mixed"
        self.network.to(memory_format=torch.channels_last)
        self.engine = engine
        return self

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Predictor:
        """Rebuild everything from a self-describing checkpoint."""
        network, meta = load_model_checkpoint(path)
        pre = meta["preprocessing"]
        calibration = meta.get("calibration") or {}
        preprocessing = Preprocessing(tuple(pre["mean"]), tuple(pre["std"]),
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
        captured: list[torch.Tensor] = []
        handle = self.network.get_submodule("fc").register_forward_hook(lambda m, i, o: captured.append(i[0]))
        try:
            logits = self._forward(batch)
        finally:
            handle.remove()
        return captured[0].float(), logits

    def _outputs(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits, plus OOD scores when the checkpoint carries an OOD detector (from the same
        forward pass: PyTorch's, or an ONNX export's ``features`` output)."""
        if self.ood is None:
            return self.logits(batch), None
        from brain_tumor.evaluation.ood import knn_scores

        if self.onnx is not None and self.onnx.has_features:
            logits_np, features_np = self.onnx.outputs(batch.numpy())
            logits, features = torch.from_numpy(logits_np), torch.from_numpy(features_np)
        else:
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

    def predict_files(self, paths: Iterable[str | Path], batch_size: int = 16,
                      skipped: list[Path] | None = None) -> Iterator[Prediction]:
        """Predict every file; unreadable ones yield a failed prediction and the batch goes on;
        unsupported files inside folders go to ``skipped``."""
        pending: list[tuple[str, torch.Tensor]] = []
        for path in expand_inputs(paths, skipped):
            try:
                for source, image in self.read(path):
                    pending.append((source, self.to_tensor(image)))
            except ImageReadError as exc:
                yield failed(str(path), str(exc))
            if len(pending) >= batch_size:
                yield from self._flush(pending)
                pending = []
        yield from self._flush(pending)

    def predict_batch(self, batch: torch.Tensor, sources: list[str]) -> list[Prediction]:
        """Answers for uint8 ``[B, 1, S, S]`` slices already prepared with :meth:`to_tensor`."""
        logits, scores = self._outputs(batch)
        return [self.answer(source, row, None if scores is None else float(scores[i]))
                for i, (source, row) in enumerate(zip(sources, logits))]

    def _flush(self, pending: list[tuple[str, torch.Tensor]]) -> Iterator[Prediction]:
        if pending:
            yield from self.predict_batch(torch.stack([t for _, t in pending]), [s for s, _ in pending])


def find_exports(checkpoint: str | Path) -> tuple[str | None, str | None]:
    """``(int8, fp32)`` ONNX exports made from exactly this model: beside a checkpoint (where
    ``brain-tumor export`` writes them) or inside a model package; stale or foreign files are
    ignored."""
    import json
    import logging

    from brain_tumor.onnx_runtime import FINGERPRINT_KEY
    from brain_tumor.package import is_package, resolve_reference

    base = resolve_reference(checkpoint)
    if is_package(base):
        folder = base
        expected = json.loads((base / "config.json").read_text()).get("package", {}).get("source_checkpoint_sha256")
    else:
        folder, expected = base.parent, file_sha256(base) if base.is_file() else None
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


def load_predictor(checkpoint: str | Path, precision: str = "auto", engine: str = "auto",
                   onnx: str | Path | None = None, threads: int | None = None) -> Predictor:
    """A predictor on the fastest path this machine has for this model (:mod:`brain_tumor.hardware`):
    an explicit ``onnx`` file, else the exports beside the checkpoint, else PyTorch at ``precision``.
    An ONNX export without the ``features`` output is skipped for a model with an OOD flag, since
    the flag needs them. What was chosen, and why, is in ``predictor.compute``."""
    predictor = Predictor.from_checkpoint(checkpoint)
    thread_choice = resolve_threads(threads)
    apply_threads(thread_choice)
    precision_choice = choose_precision(precision, "cpu")
    int8: str | None
    fp32: str | None
    if onnx is not None:
        int8, fp32 = str(onnx), None
        engine = "onnx"
    elif engine == "pytorch":
        int8 = fp32 = None
    else:
        int8, fp32 = find_exports(checkpoint)
        if predictor.ood is not None:
            int8, fp32 = (p if p and OnnxPredictor(p).has_features else None for p in (int8, fp32))
    choice = resolve_engine(engine, precision_choice, int8, fp32)
    if onnx is not None:
        choice = EngineChoice("onnx", "as exported", str(onnx), "ONNX model given explicitly")
    predictor.use_engine(choice, thread_choice)
    predictor.compute = {"precision": precision_choice.describe(), "engine": choice.describe(),
                         "threads": thread_choice.describe()}
    return predictor
