"""Is this image an MRI slice of a head at all? Checks on the decoded image, before the model,
that refuse with a reason what is plainly not one: a colour image, a blank image, noise, a photo
or document (bright edges where an MRI slice has dark air around the head), an image with no
head in it.

Written by hand because no library answers this question; each check is a simple, stated
property of MRI slices, with its threshold set a priori (not fitted to any collection), and
``bench/scope_check.py`` measures what they refuse on in-scope slices (Figshare, other
collections' brain MRI) and on out-of-scope images (photos, documents, textures, other medical
images). What they cannot tell apart, e.g. a CT or an X-ray of a head, is left to the model's
out-of-distribution flag (:mod:`brain_tumor.evaluation.ood`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from brain_tumor.data.imageio import colour_share

BLANK_SPREAD = 0.02  # (p99 - p1) / p99 of a blank image: relative, so a 16-bit file holding 8 bits is not blank
BRIGHT_EDGE = 0.35  # median of the image's edge band, as a share of its p99: air around a head is dark
NOISE = 0.25  # mean neighbour difference as a share of p99 - p1: anatomy is smooth at this scale
MIN_HEAD = 0.05  # the largest bright region, as a share of the image
EDGE_BAND = 0.04  # width of the edge band, as a share of the shorter side
SIDE = 256  # the checks run on the image resized to at most this side
COLOURED = 0.2  # share of clearly coloured pixels (brain_tumor.data.imageio.colour_share): a colour picture


@dataclass(frozen=True)
class ScopeCheck:
    """The measurements and, when the image is refused, why (one plain sentence)."""

    spread: float
    edge: float
    noise: float
    head: float
    colour: float
    reason: str | None

    @property
    def in_scope(self) -> bool:
        return self.reason is None


def _shrink(image: np.ndarray, side: int = SIDE, keep: int = 16) -> np.ndarray:
    """Every ``k``-th pixel so the longer side is at most ``side`` (enough for these statistics),
    the shorter one at least ``keep`` where the image has that many."""
    step = max(1, min(int(np.ceil(max(image.shape) / side)), min(image.shape) // keep))
    return np.asarray(image[::step, ::step], dtype=np.float32)


def check_scope(image: np.ndarray, colour: float = 0.0) -> ScopeCheck:
    """The checks on a float [0, 1] grey slice (as :func:`brain_tumor.data.imageio.read_slice`
    gives) and the share of the file's pixels that are clearly coloured
    (:func:`brain_tumor.data.imageio.colour_share`)."""
    x = _shrink(image)
    low, high = (float(v) for v in np.percentile(x, [1, 99]))
    spread = (high - low) / high if high > 0 else 0.0  # contrast relative to the image's own range
    band = max(1, int(round(EDGE_BAND * min(x.shape))))
    edges = np.concatenate([x[:band].ravel(), x[-band:].ravel(), x[band:-band, :band].ravel(),
                            x[band:-band, -band:].ravel()])
    edge = float(np.median(edges)) / high if high > 0 else 0.0
    steps = np.abs(np.diff(x, axis=0)).mean() + np.abs(np.diff(x, axis=1)).mean()
    noise = float(steps / 2 / (high - low)) if high > low else 0.0
    bright = x > low + 0.2 * (high - low)
    labels, count = ndimage.label(bright)
    head = float(np.bincount(labels.ravel())[1:].max() / x.size) if count else 0.0
    reason = None
    if colour > COLOURED:
        reason = "it is a colour image; MRI slices are grey"
    elif spread < BLANK_SPREAD:
        reason = "the image is blank (no contrast)"
    elif noise > NOISE:
        reason = "the image looks like noise, not anatomy"
    elif edge > BRIGHT_EDGE:
        reason = "its edges are bright, as in a photo or a document; an MRI slice has dark air around the head"
    elif head < MIN_HEAD:
        reason = "no head found in it"
    return ScopeCheck(spread, edge, noise, head, colour, reason)


def check_file_scope(path: str | Path, image: np.ndarray) -> ScopeCheck:
    """:func:`check_scope` of a file's decoded slice, with the file's share of coloured pixels."""
    return check_scope(image, colour_share(path))


def refusal_message(reason: str) -> str:
    """What a user is told when an image is refused as out of scope."""
    return f"out of scope: {reason}; send an MRI slice of the head (--no-scope-check to classify it anyway)"
