"""A tumour slice rendered in the style of another collection or sequence (pure functions).

Used to control the collection shortcut of a "no tumour" answer: a gate trained on Figshare
tumour slices (one source, T1 with contrast, 512 px) against no-tumour slices from elsewhere
(other sources, T2/FLAIR, small web images) can learn "which collection" instead of "is there a
tumour". Figshare slices turned into the other collection's look must still read as tumours.
The sequence proxies are crude by design (an intensity inversion is not a T2 acquisition):
they change the contrast a shortcut could key on while keeping the tumour where it was.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage
from skimage.exposure import equalize_hist
from skimage.filters import threshold_otsu

from brain_tumor.evaluation.shift import jpeg, resolution

Style = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def head_mask(x: np.ndarray) -> np.ndarray:
    """The head: Otsu on the smoothed slice, holes filled, the largest component kept."""
    smooth = ndimage.gaussian_filter(x, 2)
    if smooth.max() <= smooth.min():
        return np.zeros(x.shape, dtype=bool)
    mask = ndimage.binary_fill_holes(smooth > threshold_otsu(smooth) * 0.5)
    labels, n = ndimage.label(mask)
    if n > 1:
        mask = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return np.asarray(mask, dtype=bool)


def letterboxed(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Black bars on two sides (a slice pasted into a wider or taller picture), aspect up to 1.6."""
    h, w = x.shape
    extra = int(round(max(h, w) * float(rng.uniform(0.0, 0.6))))
    before = extra // 2
    pad = ((0, 0), (before, extra - before)) if rng.random() < 0.5 else ((before, extra - before), (0, 0))
    return np.pad(x, pad)


def small_web_image(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Downsized to 150-300 px, softened, JPEG-compressed and sometimes letterboxed, as small web
    copies of slices are."""
    pixels = int(rng.integers(150, 301))
    if rng.random() < 0.5:
        x = letterboxed(x, rng)
    out = resolution(pixels)(x, rng)
    out = ndimage.gaussian_filter(out, float(rng.uniform(0.3, 1.2)))
    return jpeg(int(rng.integers(40, 86)))(np.clip(out, 0, 1), rng)


def inverted_contrast(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A T2 proxy: intensities inverted inside the head (fluid and enhancement swap brightness),
    the background kept dark."""
    mask = head_mask(x)
    inside = x[mask]
    if not inside.size:
        return x
    low, high = np.percentile(inside, [1, 99])
    out = np.zeros_like(x)
    out[mask] = np.clip((high - x[mask]) / max(high - low, 1e-6), 0, 1) * float(rng.uniform(0.7, 1.0))
    return out.astype(np.float32)


def remapped_histogram(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A FLAIR-like proxy: the head's histogram equalised then bent by a gamma, so grey and white
    matter and the lesion take other relative brightnesses; background dark."""
    mask = head_mask(x)
    if not mask.any():
        return x
    out = np.zeros_like(x)
    out[mask] = equalize_hist(x, mask=mask)[mask] ** float(rng.uniform(0.6, 1.6))
    return out.astype(np.float32)


STYLES: dict[str, Style] = {
    "small-web-image": small_web_image,
    "inverted-contrast": inverted_contrast,
    "remapped-histogram": remapped_histogram,
}


def styled(x: np.ndarray, style: str, seed: int) -> np.ndarray:
    """``x`` in ``style`` (see :data:`STYLES`), reproducibly for ``seed``."""
    return STYLES[style](x, np.random.default_rng(seed)).astype(np.float32)
