"""Controlled distribution shifts applied to full-resolution test slices (pure functions).

Each family has three severities. A shift acts on the float [0, 1] slice as read from disk,
before the model's own preprocessing, so a robust pipeline can undo what it is built to undo.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

Shift = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def gamma(g: float) -> Shift:
    """Mid-tones darkened (g > 1), as in another sequence or window."""
    return lambda x, rng: np.clip(x, 0, 1) ** g


def contrast(factor: float) -> Shift:
    """Contrast squeezed around mid-grey and lifted (a flat, grey-background rendering)."""
    return lambda x, rng: np.clip(0.5 + (x - 0.5) * factor + (1 - factor) * 0.15, 0, 1)


def resolution(pixels: int) -> Shift:
    """Acquired at ``pixels`` across, shown back at the original size."""
    def apply(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        img = Image.fromarray((x * 255).round().astype(np.uint8))
        small = img.resize((pixels, pixels), Image.Resampling.BILINEAR)
        return np.asarray(small.resize(img.size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    return apply


def framing(border: float) -> Shift:
    """Looser framing: a black border of ``border`` x the side, placed off-centre."""
    def apply(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = x.shape
        ph, pw = int(h * border), int(w * border)
        top, left = int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))
        out = np.zeros((h + ph, w + pw), dtype=np.float32)
        out[top:top + h, left:left + w] = x
        return out
    return apply


def rotation(degrees: float) -> Shift:
    """Rotated by +/- ``degrees`` (the sign drawn at random)."""
    return lambda x, rng: np.clip(ndimage.rotate(x, degrees * rng.choice([-1, 1]), reshape=False, order=1), 0, 1)


def noise(sigma: float) -> Shift:
    """Additive Gaussian noise (low-field or fast acquisitions)."""
    return lambda x, rng: np.clip(x + rng.normal(0, sigma, x.shape), 0, 1).astype(np.float32)


def jpeg(quality: int) -> Shift:
    """Re-compressed as JPEG at ``quality`` (images passed through PACS exports, chats, web pages)."""
    def apply(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray((x * 255).round().astype(np.uint8)).save(buffer, "JPEG", quality=quality)
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32) / 255.0
    return apply


def bit_depth(bits: int) -> Shift:
    """Stored as a 16-bit PNG holding only ``bits`` bits of range (a 12-bit scanner export, say),
    then read back the way the product reads 16-bit files."""
    def apply(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from brain_tumor.data.imageio import read_slice

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "slice.png"
            Image.fromarray((x * (2**bits - 1)).round().astype(np.uint16)).save(path, compress_level=1)
            return read_slice(path)
    return apply


SHIFTS: dict[str, list[tuple[str, Shift]]] = {
    "gamma": [("1.5", gamma(1.5)), ("2.0", gamma(2.0)), ("3.0", gamma(3.0))],
    "contrast": [("0.7", contrast(0.7)), ("0.5", contrast(0.5)), ("0.3", contrast(0.3))],
    "resolution": [("128px", resolution(128)), ("96px", resolution(96)), ("64px", resolution(64))],
    "framing": [("+25%", framing(0.25)), ("+50%", framing(0.5)), ("+100%", framing(1.0))],
    "rotation": [("15deg", rotation(15)), ("30deg", rotation(30)), ("45deg", rotation(45))],
    "noise": [("0.03", noise(0.03)), ("0.06", noise(0.06)), ("0.10", noise(0.10))],
    "jpeg": [("q50", jpeg(50)), ("q20", jpeg(20)), ("q10", jpeg(10))],
    "bit_depth": [("12bit", bit_depth(12)), ("10bit", bit_depth(10)), ("8bit-in-16", bit_depth(8))],
}


def shifted(image: np.ndarray, family: str, severity: int, seed: int) -> np.ndarray:
    """``image`` under the ``severity``-th (0-based) shift of ``family``, reproducible by seed."""
    return SHIFTS[family][severity][1](image, np.random.default_rng(seed)).astype(np.float32)
