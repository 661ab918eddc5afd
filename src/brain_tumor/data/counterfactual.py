"""Counterfactual training slices: the tumour erased (nothing left to name), and, as a control, a
region of the same size and shape erased away from the tumour (the label stays).

Why both: trained only on erased tumours, a network can learn to spot the erasing instead of the
tumour's absence. With the same kind of erasure also made elsewhere on slices that keep their
label, the erasure itself carries no information; only whether the tumour is still there does.
To that end a control region is accepted only where it looks like a tumour region would: wholly
inside the image, as much tissue under it as under the tumour's, centred where tumours of the
training slices sit. Where no control region fits, the slice is not erased at all, so a region's
size tells nothing either.

The erased region is an ellipse or a rectangle around the grown tumour box, with a feathered
edge, filled with the surrounding tissue's level and grain or with a patch of tissue copied from
elsewhere in the head. The benchmark's other erasers (inpainting, the mirrored hemisphere) are
never used in training: they tell whether the model learnt the tumour's absence or one
eraser's look.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.ndimage import binary_dilation, binary_erosion, binary_fill_holes, gaussian_filter

from brain_tumor.data.erasing import BACKGROUND, Box, box_mask, box_slices, tissue_window

ERASED = -1  # the label of a slice whose tumour was erased: no class is right
GROW_RANGE = (0.12, 0.3)  # the box is grown by a random share on each side (boxes are rounded to 1%)
FILLS = ("tissue_noise", "tissue_patch")
SHAPES = ("ellipse", "rectangle")


def region_mask(box: Box, shape: tuple[int, int], grow: float, ellipse: bool) -> np.ndarray:
    """The grown box, or the ellipse through its corners (it covers the whole box)."""
    if not ellipse:
        return box_mask(box, shape, grow)
    h, w = shape
    cx, cy, bw, bh = box
    ry, rx = bh * (1 + 2 * grow) * h / 2 * np.sqrt(2), bw * (1 + 2 * grow) * w / 2 * np.sqrt(2)
    yy, xx = np.mgrid[:h, :w]
    inside = ((yy + 0.5 - cy * h) / max(ry, 0.5)) ** 2 + ((xx + 0.5 - cx * w) / max(rx, 0.5)) ** 2 <= 1
    return np.asarray(inside, dtype=bool)


def _ring(image: np.ndarray, mask: np.ndarray, width: int) -> np.ndarray:
    """Tissue values in a band of ``width`` pixels around ``mask``."""
    band = binary_dilation(mask, iterations=width) & ~mask
    values = image[band]
    return np.asarray(values[values > BACKGROUND])


def fill_tissue_noise(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The surrounding tissue's median with its grain: smoothed noise of a third of the ring's spread."""
    ring = _ring(image, mask, max(3, image.shape[0] // 40))
    if ring.size < 10:
        ring = image[image > BACKGROUND]
    level, spread = (float(np.median(ring)), float(np.std(ring))) if ring.size else (0.0, 0.0)
    grain = gaussian_filter(rng.normal(0.0, 1.0, image.shape), 1.0)
    grain /= grain.std() or 1.0
    return np.asarray(np.clip(level + 0.3 * spread * grain, 0, 1), dtype=np.float32)


def fill_tissue_patch(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                      avoid: np.ndarray, tries: int = 100) -> np.ndarray | None:
    """An image whose pixels under ``mask`` come from a same-size window elsewhere in the head
    (at least 90% inside the head shrunk by a sixteenth of the image, so mostly brain rather than
    skull and scalp; touching neither ``mask`` nor ``avoid``); None when none fits."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    tissue = binary_erosion(binary_fill_holes(image > BACKGROUND), iterations=max(1, image.shape[0] // 16))
    corner = tissue_window(image.shape, (y1 - y0, x1 - x0), mask | avoid, tissue, rng, tries)
    if corner is None:
        return None
    y, x = corner
    out = image.copy()
    out[y0:y1, x0:x1] = image[y:y + y1 - y0, x:x + x1 - x0]
    return out


def feathered(mask: np.ndarray, feather: float) -> np.ndarray:
    """Blend weights: 1 on ``mask``, fading to 0 over about ``feather`` pixels outside it."""
    alpha = mask.astype(np.float32)
    if feather > 0:  # a blurred mask is 0.5 on its edge: doubled, 1 inside and fading outside
        alpha = np.clip(2 * gaussian_filter(alpha, feather), 0, 1)
        alpha[mask] = 1.0
    return alpha


def erase_region(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, avoid: np.ndarray,
                 fill: str, feather: float) -> np.ndarray:
    """``mask`` wholly replaced by ``fill``, blended into its surroundings over about ``feather``
    pixels outside it (no hard edge to recognise when ``feather`` > 0)."""
    filled = fill_tissue_patch(image, mask, rng, avoid) if fill == "tissue_patch" else None
    if filled is None:
        filled = fill_tissue_noise(image, mask, rng)
    alpha = feathered(mask, feather)
    return np.asarray((1 - alpha) * image + alpha * filled, dtype=np.float32)


def tissue_share(image: np.ndarray, mask: np.ndarray) -> float:
    return float((image[mask] > BACKGROUND).mean()) if mask.any() else 0.0


def control_box(image: np.ndarray, box: Box, grow: float, rng: np.random.Generator,
                sites: Sequence[tuple[float, float]] = (), ellipse: bool = False, tries: int = 60) -> Box | None:
    """A box of the tumour box's size where a tumour could be: centred on a tumour site of the
    training slices (``sites``, jittered; else on any head pixel), wholly inside the image, with at
    least as much tissue under it as under the tumour's region (up to 95%), not touching the
    tumour's region. None when none fits."""
    h, w = image.shape
    tumour = region_mask(box, image.shape, grow, ellipse)
    need = min(0.95, tissue_share(image, tumour))
    head_ys, head_xs = np.nonzero(image > BACKGROUND)
    if head_ys.size == 0:
        return None
    for _ in range(tries):
        if sites and rng.random() < 0.75:
            cx, cy = sites[int(rng.integers(len(sites)))]
            cx, cy = cx + rng.normal(0, 0.05), cy + rng.normal(0, 0.05)
        else:
            k = int(rng.integers(head_ys.size))
            cx, cy = (head_xs[k] + 0.5) / w, (head_ys[k] + 0.5) / h
        candidate = (float(cx), float(cy), box[2], box[3])
        ys, xs = box_slices(candidate, image.shape, grow)
        full_h = int(np.ceil(round(box[3] * (1 + 2 * grow) * h, 6)))
        full_w = int(np.ceil(round(box[2] * (1 + 2 * grow) * w, 6)))
        if ys.stop - ys.start < full_h - 1 or xs.stop - xs.start < full_w - 1:
            continue  # clipped by the image's edge: a tumour region never is
        region = region_mask(candidate, image.shape, grow, ellipse)
        if (region & tumour).any() or tissue_share(image, region) < need:
            continue
        return candidate
    return None


def erased_copy(plain: np.ndarray, box: Box, rng: np.random.Generator, sites: Sequence[tuple[float, float]] = (),
                control: bool = False) -> np.ndarray | None:
    """``plain`` (float, [0, 1]) with the tumour's region erased or, with ``control``, a region of
    the same size and shape away from it, by the training-time eraser (random shape, growth, fill
    and feather from ``rng``); None where no control region fits (then neither is erased)."""
    grow = float(rng.uniform(*GROW_RANGE))
    ellipse = SHAPES[int(rng.integers(len(SHAPES)))] == "ellipse"
    fill = FILLS[int(rng.integers(len(FILLS)))]
    feather = float(rng.uniform(0.0, max(1.0, plain.shape[0] / 75)))
    other = control_box(plain, box, grow, rng, sites, ellipse)
    if other is None:  # no control region would fit: erase nothing, so size tells nothing
        return None
    tumour = region_mask(box, plain.shape, grow, ellipse)
    region = region_mask(other, plain.shape, grow, ellipse) if control else tumour
    return erase_region(plain, region, rng, tumour, fill, feather)


def counterfactual(image: torch.Tensor, box: Box, label: int, share: float, rng: np.random.Generator,
                   sites: Sequence[tuple[float, float]] = ()) -> tuple[torch.Tensor, int]:
    """With probability ``share`` the tumour is erased (label :data:`ERASED`); with probability
    ``share`` a region of the same size and shape away from it is erased the same way (label
    kept); otherwise, or where no control region fits, the slice is returned as it is.
    ``image`` is uint8 ``[1, H, W]``; ``sites`` are tumour-box centres of training slices."""
    u = float(rng.random())
    if u >= 2 * share:
        return image, label
    plain = image[0].numpy().astype(np.float32) / 255.0
    erased = erased_copy(plain, box, rng, sites, control=u >= share)
    if erased is None:
        return image, label
    new_label = label if u >= share else ERASED
    return torch.from_numpy(np.round(np.clip(erased, 0, 1) * 255).astype(np.uint8))[None], new_label
