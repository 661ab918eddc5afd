"""What a model's answer on an altered slice counts as, for the shortcut benchmark."""

from __future__ import annotations

import numpy as np


def answer_kinds(true: np.ndarray, predicted: np.ndarray, referred: np.ndarray,
                 no_tumour: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per slice, exactly one of: ``referred``; ``no_tumour`` (the gate found none: right for an
    erased tumour); ``same`` (the true tumour class); ``other_tumour``. ``predicted`` and ``true``
    are class indices; ``no_tumour`` marks the slices the gate answered (default: none)."""
    referred = np.asarray(referred, dtype=bool)
    none = np.zeros_like(referred) if no_tumour is None else np.asarray(no_tumour, dtype=bool) & ~referred
    same = (np.asarray(predicted) == np.asarray(true)) & ~referred & ~none
    return {"same": same, "other_tumour": ~same & ~referred & ~none, "no_tumour": none, "referred": referred}
