"""Context mixing: a slice's tumour shown in another slice's context, label kept, so that the
context (plane, level, anatomy around the tumour) stops naming the class and only the tumour does.

On this dataset the context is a shortcut: with the tumour erased, models still name glioma and
pituitary slices (``brain-tumor shortcut-test``), because each class comes from its own levels
and planes. A mixed slice takes the tumour's region (its grown box or the ellipse through it,
feathered) from one training slice and everything else from another training slice, any class,
whose own tumour is erased first by the counterfactual eraser (:mod:`brain_tumor.data.counterfactual`),
so the context holds no second tumour. The label is the tumour's. A mix is made only where the
context slice has as much tissue under the pasted region as the tumour's own slice has (up to
90%), so tumours are not pasted onto air.
"""

from __future__ import annotations

import numpy as np

from brain_tumor.data.counterfactual import (
    FILLS,
    GROW_RANGE,
    SHAPES,
    erase_region,
    feathered,
    region_mask,
    tissue_share,
)
from brain_tumor.data.erasing import Box


def context_mixed(tumour_slice: np.ndarray, tumour_box: Box, context_slice: np.ndarray, context_box: Box,
                  rng: np.random.Generator) -> np.ndarray | None:
    """``tumour_slice``'s tumour region on ``context_slice`` with the latter's tumour erased
    (float [0, 1] slices of one size, boxes normalised ``(cx, cy, w, h)``); None where the context
    has too little tissue under the region."""
    grow = float(rng.uniform(*GROW_RANGE))
    ellipse = SHAPES[int(rng.integers(len(SHAPES)))] == "ellipse"
    feather = float(rng.uniform(0.0, max(1.0, tumour_slice.shape[0] / 75)))
    region = region_mask(tumour_box, tumour_slice.shape, grow, ellipse)
    if tissue_share(context_slice, region) < min(0.9, tissue_share(tumour_slice, region)):
        return None
    other = region_mask(context_box, context_slice.shape, grow, ellipse)
    fill = FILLS[int(rng.integers(len(FILLS)))]
    context = erase_region(context_slice, other, rng, other | region, fill, feather)
    alpha = feathered(region, feather)  # the eraser's edge, so a pasted edge looks like an erased one
    return np.asarray(alpha * tumour_slice + (1 - alpha) * context, dtype=np.float32)
