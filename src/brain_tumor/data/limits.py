"""How large an image a reader may decode, checked against the size a file declares before any
pixel is decoded, and :class:`ImageReadError`, what every failed read raises.

:mod:`brain_tumor.data.imageio` (which re-exports these names) and
:mod:`brain_tumor.data.figshare_mat` both use them; they live here so that neither of the two
has to import the other for them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path


# refuse decompression bombs well before they allocate gigabytes: every format's declared size is
# checked against this before its pixels are decoded (override: $BRAIN_TUMOR_MAX_PIXELS)
def _max_pixels(default: int = 64_000_000) -> int:
    value = os.environ.get("BRAIN_TUMOR_MAX_PIXELS", "")
    if value.strip().isdigit() and int(value) > 0:
        return int(value)
    if value:
        warnings.warn(f"BRAIN_TUMOR_MAX_PIXELS={value!r} is not a positive integer; using {default:,}", stacklevel=1)
    return default


MAX_PIXELS = _max_pixels()
MAX_FRAMES = 4096


class ImageReadError(ValueError):
    """A file that cannot be read as an MRI slice; the message is one line."""


def check_declared_size(path: Path, rows: int, cols: int, frames: int = 1) -> None:
    """Refuse an image by the size its header declares, before any pixel is decoded."""
    if rows <= 0 or cols <= 0:
        raise ImageReadError(f"{path}: declares an empty image ({rows}x{cols})")
    if rows * cols > MAX_PIXELS:
        raise ImageReadError(f"{path}: image too large ({rows}x{cols} declared; limit {MAX_PIXELS:,} pixels)")
    if frames > MAX_FRAMES:
        raise ImageReadError(f"{path}: too many frames ({frames} declared; limit {MAX_FRAMES})")
