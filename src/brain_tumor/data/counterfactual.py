"""Counterfactual training slices: the tumour erased (nothing left to name), and, as a control, a
box of the same size erased away from the tumour (the label stays).

Why both: trained only on erased tumours, a network can learn to spot the erasing (a flat or
pasted rectangle) instead of the tumour's absence. With the same rectangle also cut elsewhere on
slices that keep their label, the rectangle itself carries no information; only whether the
tumour is still there does. Held-out erasing methods (inpainting, the mirrored hemisphere) then
tell whether the model learnt absence of tumour or one eraser's look.

Erasers used in training are cheap (a flat fill of the surrounding tissue's median, or a patch of
tissue copied from elsewhere in the head), so they run per sample in the data loader.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from brain_tumor.data.erasing import BACKGROUND, Box, box_mask, erase_box_fill, erase_tissue_patch

ERASED = -1  # the label of a slice whose tumour was erased: no class is right

# (image, box to erase, grow, rng, a box never to copy from: the tumour when a control box is erased)
TrainEraser = Callable[[np.ndarray, Box, float, np.random.Generator, Box | None], np.ndarray]


def _box_fill(image: np.ndarray, box: Box, grow: float, rng: np.random.Generator,
              avoid: Box | None = None) -> np.ndarray:
    return erase_box_fill(image, box, grow)


def _tissue_patch(image: np.ndarray, box: Box, grow: float, rng: np.random.Generator,
                  avoid: Box | None = None) -> np.ndarray:
    return erase_tissue_patch(image, box, grow, rng, None if avoid is None else box_mask(avoid, image.shape, grow))


# what training erases with; the shortcut benchmark also uses others, never seen in training
TRAIN_ERASERS: dict[str, TrainEraser] = {"box_fill": _box_fill, "tissue_patch": _tissue_patch}
GROW_RANGE = (0.05, 0.3)  # the tumour box is grown by a random share on each side


def control_box(image: np.ndarray, box: Box, grow: float, rng: np.random.Generator,
                tries: int = 50) -> Box | None:
    """A box of the tumour box's size centred on head tissue, not touching the grown tumour box;
    None when none fits (a tumour filling most of the head)."""
    h, w = image.shape
    avoid = box_mask(box, image.shape, grow)
    ys, xs = np.nonzero(image > BACKGROUND)
    if ys.size == 0:
        return None
    for _ in range(tries):
        k = int(rng.integers(ys.size))
        candidate = (float((xs[k] + 0.5) / w), float((ys[k] + 0.5) / h), box[2], box[3])
        if not (box_mask(candidate, image.shape, grow) & avoid).any():
            return candidate
    return None


def counterfactual(image: torch.Tensor, box: Box, label: int, share: float,
                   rng: np.random.Generator) -> tuple[torch.Tensor, int]:
    """With probability ``share`` the tumour is erased (label :data:`ERASED`); with probability
    ``share`` a same-size box away from it is erased by the same method (label kept); otherwise
    the slice is returned as it is. ``image`` is uint8 ``[1, H, W]``."""
    u = float(rng.random())
    if u >= 2 * share:
        return image, label
    plain = image[0].numpy().astype(np.float32) / 255.0
    eraser = list(TRAIN_ERASERS.values())[int(rng.integers(len(TRAIN_ERASERS)))]
    grow = float(rng.uniform(*GROW_RANGE))
    if u < share:
        target, new_label = box, ERASED
    else:
        found = control_box(plain, box, grow, rng)
        if found is None:
            return image, label
        target, new_label = found, label
    erased = eraser(plain, target, grow, rng, None if new_label == ERASED else box)
    return torch.from_numpy(np.round(np.clip(erased, 0, 1) * 255).astype(np.uint8))[None], new_label
