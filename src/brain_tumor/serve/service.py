"""The loaded model behind the API: decoding, micro-batched prediction, Grad-CAM and the answers."""

from __future__ import annotations

import base64
import io
import logging
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import HTTPException
from PIL import Image

from brain_tumor.answers import Prediction
from brain_tumor.data.imageio import ImageReadError, read_slice
from brain_tumor.explain.gradcam import grad_cam, overlay
from brain_tumor.model_loading import load_predictor
from brain_tumor.serve.batching import MicroBatcher
from brain_tumor.serve.schemas import PredictionOut
from brain_tumor.serve.settings import ServiceSettings
from brain_tumor.serve.uploads import client_message
from brain_tumor.training.checkpoint import read_checkpoint_meta

log = logging.getLogger("brain_tumor.serve.app")  # the name it logged under before the split


def observe_batch(size: int, seconds: float) -> None:
    """Micro-batch sizes and forward times for /metrics."""
    from prometheus_client import Histogram

    global _BATCH_SIZE, _BATCH_SECONDS
    if _BATCH_SIZE is None:
        _BATCH_SIZE = Histogram("brain_tumor_batch_size", "Images per forward pass", buckets=(1, 2, 4, 8, 16, 32, 64))
        _BATCH_SECONDS = Histogram("brain_tumor_batch_seconds", "Seconds per micro-batch forward pass")
    _BATCH_SIZE.observe(size)
    _BATCH_SECONDS.observe(seconds)


_BATCH_SIZE: Any = None
_BATCH_SECONDS: Any = None
NOTICE = "Research use only. Not a medical device and not for diagnosis."


def _png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class Service:
    """The loaded model. Predictions of concurrent requests are micro-batched into one forward
    pass; Grad-CAM is computed only when asked for. One lock, because Grad-CAM hooks the shared
    PyTorch network (an ONNX engine's predictions do not need it)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.predictor = load_predictor(settings.checkpoint, settings.precision, settings.engine, settings.onnx,
                                        settings.threads, settings.calibration, settings.gate, settings.tta)
        self.predictor.scope_check = settings.scope_check
        engine = self.predictor.compute["engine"]
        log.info("serving %s on %s %s (%s)", settings.checkpoint, engine["engine"], engine["precision"],
                 engine["reason"])
        self.lock = threading.Lock()
        self.decodes = threading.BoundedSemaphore(settings.max_concurrent_decodes)
        self.meta = read_checkpoint_meta(settings.checkpoint)
        self.batcher: MicroBatcher[torch.Tensor, Prediction] = MicroBatcher(
            self.predict_tensors, settings.max_batch, settings.max_wait_ms, on_batch=observe_batch)
        size = self.predictor.preprocessing.image_size
        self.predict_tensors([torch.zeros(1, size, size, dtype=torch.uint8)])  # warm-up: ready means fast
        self.ready = True

    def decode(self, data: bytes, suffix: str) -> torch.Tensor:
        """The upload as the model's uint8 ``[1, S, S]`` input; 422 with a reason if unreadable or
        plainly not an MRI slice of a head (:mod:`brain_tumor.scope`)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                with self.decodes:  # the full-size image lives only inside the cap
                    image = read_slice(path)
                    if (reason := self.predictor.out_of_scope_reason(path, image)) is not None:
                        raise HTTPException(422, f"out of scope: {reason}; send an MRI slice of the head")
                    return self.predictor.to_tensor(image)
            except ImageReadError as exc:
                raise HTTPException(422, client_message(str(exc), path)) from exc

    def predict_tensors(self, tensors: Sequence[torch.Tensor]) -> list[Prediction]:
        """One forward pass for a micro-batch."""
        batch = torch.stack(list(tensors))
        if self.predictor.onnx is not None:
            return self.predictor.predict_batch(batch, ["upload"] * len(batch))
        with self.lock:
            return self.predictor.predict_batch(batch, ["upload"] * len(batch))

    def explain(self, tensor: torch.Tensor) -> dict[str, str]:
        """Grad-CAM of the predicted class: the overlay and the map as base64 PNGs."""
        with self.lock:
            cam = grad_cam(self.predictor.network, self.predictor.normalize, tensor[None])[0]
        grey = tensor[0].numpy()
        return {"overlay_png": _png_base64(overlay(grey, cam)),
                "cam_png": _png_base64((255 * np.clip(cam, 0, 1)).astype(np.uint8))}

    def answer(self, prediction: Prediction, tensor: torch.Tensor, images: dict[str, str] | None,
               with_image: bool = False) -> PredictionOut:
        """The response for one slice; the slice as a PNG only when asked for (or explained), since
        encoding it costs more than the answer and makes the response ~100x larger."""
        result = prediction.row()
        if "prediction_set" in result:
            members = result["prediction_set"]
            result["prediction_set"] = members.split("|") if members else []
            result["set_confidence"] = self.predictor.set_confidence
        for key in ("path", "error", *(f"p_{c}" for c in prediction.probabilities)):
            result.pop(key, None)
        image = _png_base64(tensor[0].numpy()) if with_image or images else None
        result.update(probabilities=prediction.probabilities, image_png=image, notice=NOTICE, **(images or {}))
        return PredictionOut.model_validate(result)

    def applied_calibration(self) -> dict[str, Any] | None:
        """The calibration the answers use: a calibration.json's (with its source and the sets'
        coverage) where one was applied, else the checkpoint's own."""
        p = self.predictor
        if p.calibration_source is None:
            return self.meta.get("calibration")
        return {"temperature": p.temperature, "refer_threshold": p.refer_threshold, "source": p.calibration_source,
                "set_confidence": p.set_confidence if p.conformal is not None else None}

    def describe(self) -> dict[str, Any]:
        """Classes, preprocessing, calibration, metrics and the model card."""
        card = self.settings.model_card
        return {"class_names": self.meta["class_names"], "architecture": self.meta["architecture"],
                "preprocessing": self.meta["preprocessing"], "calibration": self.applied_calibration(),
                "metrics": self.meta.get("metrics"), "epoch": self.meta.get("epoch"),
                "ood": {k: v for k, v in (self.meta.get("ood") or {}).items() if k != "bank"} or None,
                "model_card": card.read_text() if card and card.is_file() else None, "notice": NOTICE}


