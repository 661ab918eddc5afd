"""What every engine over an ONNX export answers with (see :mod:`brain_tumor.export`): its named
outputs, ``logits`` always, ``features`` and ``tumour_evidence`` where the export carries them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ExportOutputs:
    """The outputs of an exported model under some engine; an engine sets :attr:`output_names`
    and implements :meth:`run`."""

    output_names: list[str]

    def run(self, images_uint8: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The outputs ``names`` (of :attr:`output_names`) for uint8 ``[B, 1, S, S]``."""
        raise NotImplementedError

    @property
    def has_features(self) -> bool:
        """Whether the export carries the penultimate features (the OOD flag and the gate need them)."""
        return "features" in self.output_names

    @property
    def has_evidence(self) -> bool:
        """Whether the export carries a tumour map's evidence (``tumour_evidence``)."""
        return "tumour_evidence" in self.output_names

    def outputs(self, images_uint8: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(logits, features or None)`` for uint8 ``[B, 1, S, S]``."""
        out = self.run(images_uint8, ["logits", "features"] if self.has_features else ["logits"])
        return out["logits"], out.get("features")

    def logits(self, images_uint8: np.ndarray) -> np.ndarray:
        """Logits for uint8 ``[B, 1, S, S]``."""
        return self.run(images_uint8, ["logits"])["logits"]
