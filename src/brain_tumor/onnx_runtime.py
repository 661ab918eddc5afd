"""ONNX Runtime inference over an exported model (see :mod:`brain_tumor.export`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from brain_tumor.export_outputs import ExportOutputs

FINGERPRINT_KEY = "brain_tumor.checkpoint_sha256"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class OnnxPredictor(ExportOutputs):
    """An ONNX Runtime CPU session over an exported model: uint8 slices in, logits (and, for
    exports that carry them, the penultimate features the OOD flag and the gate need, and the
    tumour map's evidence) out."""

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

    def run(self, images_uint8: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The outputs ``names`` (of :attr:`output_names`) for uint8 ``[B, 1, S, S]``."""
        out = self.session.run(list(names), {"image": images_uint8.astype(np.float32) / 255.0})
        return {name: np.asarray(value) for name, value in zip(names, out)}

    def made_from(self, checkpoint: str | Path) -> bool:
        """Whether this model was exported from exactly that checkpoint file."""
        return self.metadata.get(FINGERPRINT_KEY) == file_sha256(checkpoint)
