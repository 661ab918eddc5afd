"""ONNX Runtime inference over an exported model (see :mod:`brain_tumor.export`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

FINGERPRINT_KEY = "brain_tumor.checkpoint_sha256"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class OnnxPredictor:
    """An ONNX Runtime CPU session over an exported model: uint8 slices in, logits (and, for
    exports that carry them, the penultimate features the OOD flag needs) out."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def has_features(self) -> bool:
        return "features" in self.output_names

    def outputs(self, images_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(logits, features or None)`` for uint8 ``[B, 1, S, S]``."""
        x = images_uint8.astype(np.float32) / 255.0
        names = ["logits", "features"] if self.has_features else ["logits"]
        out = self.session.run(names, {"image": x})
        return np.asarray(out[0]), (np.asarray(out[1]) if self.has_features else None)

    def logits(self, images_uint8: np.ndarray) -> np.ndarray:
        """Logits for uint8 ``[B, 1, S, S]``."""
        return self.outputs(images_uint8)[0]

    def made_from(self, checkpoint: str | Path) -> bool:
        """Whether this model was exported from exactly that checkpoint file."""
        return self.metadata.get(FINGERPRINT_KEY) == file_sha256(checkpoint)
