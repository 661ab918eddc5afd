"""Slice preprocessing pipelines: float [0, 1] HxW -> uint8 ``size x size``.

``paper``: stretch-resize the whole image (what the paper did).
``robust``: remove what is incidental to the source before resizing: crop to the head
(threshold + largest connected component, so black borders and burned-in text are dropped),
pad to a square instead of stretching, and standardise intensity by percentile clipping over
the head. The same function runs in training (cache), evaluation, ``predict`` and the service.

The head threshold is Otsu's on log intensities above the background level, after a median
filter. Every step commutes with increasing intensity maps: a median filter and percentiles
do exactly, and ``log(c * x**g) = log(c) + g * log(x)`` is an affine map of the log values,
which moves Otsu's threshold with it. So the crop is the same under any gain, gamma or
offset of the intensities (another sequence's window), and the median keeps noise out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.filters import threshold_otsu

PIPELINES = ("paper", "robust")
PIPELINE_VERSIONS = {"paper": 1, "robust": 2}  # bump when a pipeline's output changes (cache keys)


@dataclass(frozen=True)
class RobustSettings:
    """Knobs of the robust pipeline (defaults fit T1/T2/FLAIR slices in any framing)."""

    median_px: int = 5  # median filter before thresholding (on the <= 256-px view): noise out
    background_percentile: float = 1.0  # the background level subtracted before the log
    min_foreground_px: int = 16  # fewer pixels above the background: no head (blank image)
    opening_px: int = 3  # detaches thin text and annotations from the head before labelling
    margin: float = 0.04  # of the crop's side, kept around the head
    low_percentile: float = 0.5
    high_percentile: float = 99.5


def resize_square(array: np.ndarray, size: int) -> np.ndarray:
    """Float [0, 1] HxW -> uint8 size x size (bilinear, like Keras' resize; stretches)."""
    img = Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8))
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))


def view_step(shape: tuple[int, ...], side: int = 256) -> int:
    """Stride that shows an image of ``shape`` at <= ``side`` px: the head is found there, fast."""
    return max(1, max(shape) // side)


def foreground_threshold(image: np.ndarray, settings: RobustSettings = RobustSettings()) -> float | None:
    """The intensity above which a pixel is head, not background; None for a blank image.

    Otsu's threshold over ``log(x - background)``, so it follows any gain/gamma/offset change.
    """
    background = float(np.percentile(image, settings.background_percentile))
    above = image[image > background] - background
    if above.size < settings.min_foreground_px:
        return None
    logs = np.log(above)
    if float(logs.max() - logs.min()) < 1e-6:  # one value above the background: it is all head
        return background
    return background + float(np.exp(threshold_otsu(logs)))


def head_mask(image: np.ndarray, settings: RobustSettings = RobustSettings()) -> np.ndarray:
    """The largest bright connected region (the head); all-False for a blank image."""
    if settings.median_px > 1:
        image = ndimage.median_filter(image, size=settings.median_px)
    threshold = foreground_threshold(image, settings)
    if threshold is None:
        return np.zeros(image.shape, dtype=bool)
    mask = image > threshold
    if settings.opening_px > 0:
        mask = ndimage.binary_opening(mask, iterations=settings.opening_px)
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros(image.shape, dtype=bool)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    return np.asarray(ndimage.binary_fill_holes(labels == int(np.argmax(sizes)) + 1))


def head_box(image: np.ndarray, settings: RobustSettings = RobustSettings()) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of the head with a margin; the whole image when no head is found."""
    h, w = image.shape
    step = view_step(image.shape)
    mask = head_mask(image[::step, ::step], settings)
    if not mask.any():
        return 0, h, 0, w
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min() * step, (ys.max() + 1) * step, xs.min() * step, (xs.max() + 1) * step
    pad = int(round(settings.margin * max(y1 - y0, x1 - x0)))
    return max(int(y0) - pad, 0), min(int(y1) + pad, h), max(int(x0) - pad, 0), min(int(x1) + pad, w)


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Centre ``image`` on a black square canvas (keeps the aspect ratio)."""
    h, w = image.shape
    side = max(h, w)
    out = np.zeros((side, side), dtype=image.dtype)
    y, x = (side - h) // 2, (side - w) // 2
    out[y:y + h, x:x + w] = image
    return out


def standardise_intensity(image: np.ndarray, mask: np.ndarray | None,
                          settings: RobustSettings = RobustSettings()) -> np.ndarray:
    """Clip to the head's [low, high] percentiles and rescale to [0, 1] (background stays 0)."""
    values = image[mask] if mask is not None and mask.any() else image.ravel()
    lo, hi = np.percentile(values, [settings.low_percentile, settings.high_percentile])
    if hi <= lo:
        return np.zeros_like(image, dtype=np.float32)
    scaled: np.ndarray = np.clip((image.astype(np.float32) - lo) / (hi - lo), 0, 1)
    return scaled


def robust_slice(image: np.ndarray, settings: RobustSettings = RobustSettings()) -> np.ndarray:
    """Crop to the head, standardise its intensities, pad to a square: float [0, 1]."""
    y0, y1, x0, x1 = head_box(image, settings)
    crop = image[y0:y1, x0:x1]
    step = view_step(crop.shape)
    threshold = foreground_threshold(crop[::step, ::step], settings) if crop.size else None
    foreground = crop > threshold if threshold is not None else None
    return pad_to_square(standardise_intensity(crop, foreground, settings))


def prepare_slice(image: np.ndarray, size: int, pipeline: str = "paper") -> np.ndarray:
    """The named pipeline: float [0, 1] HxW -> uint8 size x size."""
    if pipeline == "paper":
        return resize_square(image, size)
    if pipeline == "robust":
        return resize_square(robust_slice(image), size)
    raise ValueError(f"preprocessing must be one of {PIPELINES}, got {pipeline!r}")


def map_box(box: tuple[float, float, float, float], image: np.ndarray,
            pipeline: str) -> tuple[float, float, float, float]:
    """A normalised (cx, cy, w, h) box of ``image`` in the frame the pipeline's output shows."""
    if pipeline == "paper":
        return box
    h, w = image.shape
    y0, y1, x0, x1 = head_box(image)
    side = max(y1 - y0, x1 - x0)
    oy, ox = (side - (y1 - y0)) // 2 - y0, (side - (x1 - x0)) // 2 - x0  # original pixel -> padded crop pixel
    cx, cy, bw, bh = box
    return ((cx * w + ox) / side, (cy * h + oy) / side, bw * w / side, bh * h / side)
