"""How well a CAM points at the tumour: pointing game and share of energy in the box (pure)."""

from __future__ import annotations

import numpy as np


def box_mask(box: tuple[float, float, float, float], shape: tuple[int, int], tolerance_px: int = 0) -> np.ndarray:
    """Boolean mask of a normalised (cx, cy, w, h) box, grown by ``tolerance_px`` on each side."""
    h, w = shape
    cx, cy, bw, bh = box
    x0 = int(np.floor((cx - bw / 2) * w)) - tolerance_px
    x1 = int(np.ceil((cx + bw / 2) * w)) + tolerance_px
    y0 = int(np.floor((cy - bh / 2) * h)) - tolerance_px
    y1 = int(np.ceil((cy + bh / 2) * h)) + tolerance_px
    mask = np.zeros(shape, dtype=bool)
    mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return mask


def pointing_hit(cam: np.ndarray, box: tuple[float, float, float, float], tolerance_px: int = 15) -> bool:
    """True when the CAM's maximum lies inside the (tolerance-grown) box."""
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return bool(box_mask(box, cam.shape, tolerance_px)[y, x])


def energy_in_box(cam: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Share of the CAM's total mass inside the box (0 for an empty CAM)."""
    total = float(cam.sum())
    return float(cam[box_mask(box, cam.shape)].sum() / total) if total > 0 else 0.0
