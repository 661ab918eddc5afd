"""Tumour erasing and isolation, for the shortcut benchmark (does the model answer from the tumour,
or from the rest of the slice: plane, level, anatomy?) and for counterfactual training.

Each function takes a float [0, 1] slice and a tumour box ``(centre x, centre y, width, height)``
normalised to the image (the manifest's ``box_*`` columns) and returns a new slice. The box is
grown by ``grow`` on each side so the tumour's rim is removed too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Box = tuple[float, float, float, float]
BACKGROUND = 0.02  # intensities at or below this are air, not tissue
GROW = 0.15  # the benchmark's default: the box grown by 15% of its size on each side, the tumour's rim with it


def box_slices(box: Box, shape: tuple[int, int], grow: float = 0.15) -> tuple[slice, slice]:
    """Row and column slices of the grown box, clipped to the image."""
    h, w = shape
    cx, cy, bw, bh = box
    bw, bh = bw * (1 + 2 * grow), bh * (1 + 2 * grow)
    def edge(value: float, rounding) -> int:  # type: ignore[no-untyped-def]
        return int(rounding(round(value, 6)))  # 0.55 * 100 is 55.000000000000007: not a pixel more

    y0, y1 = edge((cy - bh / 2) * h, np.floor), edge((cy + bh / 2) * h, np.ceil)
    x0, x1 = edge((cx - bw / 2) * w, np.floor), edge((cx + bw / 2) * w, np.ceil)
    return slice(max(y0, 0), min(max(y1, y0 + 1), h)), slice(max(x0, 0), min(max(x1, x0 + 1), w))


def box_mask(box: Box, shape: tuple[int, int], grow: float = 0.15) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[box_slices(box, shape, grow)] = True
    return mask


def surrounding_tissue(image: np.ndarray, box: Box, grow: float = 0.15) -> float:
    """Median of the tissue in a ring around the grown box (background excluded)."""
    inner = box_mask(box, image.shape, grow)
    outer = box_mask(box, image.shape, grow + 0.5)
    ring = image[outer & ~inner]
    tissue = ring[ring > BACKGROUND]
    if tissue.size:
        return float(np.median(tissue))
    head = image[image > BACKGROUND]
    return float(np.median(head)) if head.size else 0.0


def erase_box_fill(image: np.ndarray, box: Box, grow: float = 0.15) -> np.ndarray:
    """The grown box filled with the median of the tissue around it."""
    out = image.copy()
    out[box_slices(box, image.shape, grow)] = surrounding_tissue(image, box, grow)
    return out


def erase_inpaint(image: np.ndarray, box: Box, grow: float = 0.15) -> np.ndarray:
    """The grown box filled by biharmonic inpainting from its border (scikit-image); where the
    grown box covers the whole slice (nothing to inpaint from), :func:`erase_box_fill`."""
    from skimage.restoration import inpaint_biharmonic

    mask = box_mask(box, image.shape, grow)
    if mask.all():
        return erase_box_fill(image, box, grow)
    filled: np.ndarray = np.clip(inpaint_biharmonic(image, mask), 0, 1)
    return filled.astype(np.float32)


def erase_mirror(image: np.ndarray, box: Box, grow: float = 0.15) -> np.ndarray:
    """The grown box replaced by the mirror-image region of the other hemisphere (mirrored about
    the head's vertical midline). A tumour on the midline (most pituitary ones) mirrors onto
    itself: this method cannot erase it, which the report shows as such."""
    cols = np.nonzero((image > BACKGROUND).any(axis=0))[0]
    mid = (cols.min() + cols.max() + 1) / 2 if cols.size else image.shape[1] / 2
    ys, xs = box_slices(box, image.shape, grow)
    out = image.copy()
    mirrored = np.clip(np.round(2 * mid - 1 - np.arange(xs.start, xs.stop)).astype(int), 0, image.shape[1] - 1)
    out[ys, xs] = image[ys][:, mirrored]
    return out


def tissue_window(shape: tuple[int, int], size: tuple[int, int], blocked: np.ndarray, tissue: np.ndarray,
                  rng: np.random.Generator, tries: int) -> tuple[int, int] | None:
    """Top-left corner of a random ``size`` window at least 90% on ``tissue`` and touching nothing
    ``blocked``; None when ``tries`` draws find none."""
    (h, w), (ph, pw) = shape, size
    if ph >= h or pw >= w:
        return None
    for _ in range(tries):
        y, x = int(rng.integers(h - ph + 1)), int(rng.integers(w - pw + 1))
        if not blocked[y:y + ph, x:x + pw].any() and tissue[y:y + ph, x:x + pw].mean() >= 0.9:
            return y, x
    return None


def erase_tissue_patch(image: np.ndarray, box: Box, grow: float = 0.15, rng: np.random.Generator | None = None,
                       avoid: np.ndarray | None = None, tries: int = 200) -> np.ndarray:
    """The grown box replaced by a same-size patch of head tissue copied from elsewhere in the slice
    (at least 90% tissue, touching neither the box nor ``avoid``); a flat fill when none fits.
    Without ``rng`` the patch is chosen by a generator seeded from the box, so it is reproducible."""
    ys, xs = box_slices(box, image.shape, grow)
    ph, pw = ys.stop - ys.start, xs.stop - xs.start
    blocked = box_mask(box, image.shape, grow) if avoid is None else box_mask(box, image.shape, grow) | avoid
    rng = rng if rng is not None else np.random.default_rng([round(abs(v) * 1e6) for v in box])
    corner = tissue_window(image.shape, (ph, pw), blocked, image > BACKGROUND, rng, tries)
    if corner is None:
        return erase_box_fill(image, box, grow)
    y, x = corner
    out = image.copy()
    out[ys, xs] = image[y:y + ph, x:x + pw]
    return out


def tumour_on_blank(image: np.ndarray, box: Box, grow: float = 0.15) -> np.ndarray:
    """Only the grown tumour box kept, on black."""
    out = np.zeros_like(image)
    region = box_slices(box, image.shape, grow)
    out[region] = image[region]
    return out


def tumour_on_tissue(image: np.ndarray, box: Box, grow: float = 0.15) -> np.ndarray:
    """Only the grown tumour box kept, on a flat head-shaped field of the surrounding tissue's median."""
    out = np.where(image > BACKGROUND, surrounding_tissue(image, box, grow), 0).astype(np.float32)
    region = box_slices(box, image.shape, grow)
    out[region] = image[region]
    return out


# what the benchmark applies; "erased" methods remove the tumour, "isolated" ones keep only it
# (training erases with box_fill and tissue_patch only: brain_tumor.data.counterfactual)
ERASERS: dict[str, Callable[[np.ndarray, Box, float], np.ndarray]] = {
    "box_fill": erase_box_fill, "tissue_patch": erase_tissue_patch, "inpaint": erase_inpaint,
    "mirror": erase_mirror}
ISOLATORS: dict[str, Callable[[np.ndarray, Box, float], np.ndarray]] = {
    "tumour_on_blank": tumour_on_blank, "tumour_on_tissue": tumour_on_tissue}
