"""Dataset over the decoded uint8 cache and the Lightning DataModule around a split."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from brain_tumor.data.context_mix import context_mixed
from brain_tumor.data.counterfactual import counterfactual
from brain_tumor.data.erasing import GROW, Box, box_mask
from brain_tumor.data.splits import Split


def distilled_target(label: int, teacher: torch.Tensor, weight: float) -> torch.Tensor:
    """A training target for distillation (:mod:`brain_tumor.training.distill`): the label mixed
    with the teachers' probabilities, ``(1 - weight) * one_hot(label) + weight * teacher``."""
    one_hot = torch.zeros_like(teacher)
    one_hot[label] = 1.0
    return (1 - weight) * one_hot + weight * teacher


MASK_GROW = GROW  # the tumour region of the context penalty: the box grown as the shortcut benchmark grows it


class SliceDataset(Dataset[tuple[torch.Tensor, int]]):
    """``(uint8 [1, H, W], label)`` for the chosen positions, with an optional transform.

    With ``counterfactual`` > 0 and tumour ``boxes`` (one per image, None where unknown), that share
    of the slices has its tumour erased and the label :data:`~brain_tumor.data.counterfactual.ERASED`,
    and the same share a same-size box erased away from the tumour, before the transform. With
    ``context_mix`` > 0, that share of the slices with a box shows its tumour in the context of
    another of these slices (:mod:`brain_tumor.data.context_mix`), label kept; a slice mixed is not
    also erased. With ``soft_targets`` (``[N, C]``, the teachers' probabilities by position) the
    target is a probability vector (:func:`distilled_target`). With ``with_masks`` (the context
    penalty of :mod:`brain_tumor.training.module`), each item has a third element: the tumour's box
    grown by :data:`MASK_GROW`, uint8 ``[1, H, W]`` moved by the same geometric augmentation as the
    image (all zero where no box is known)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, positions: list[int],
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 boxes: Sequence[Box | None] | None = None, counterfactual: float = 0.0,
                 context_mix: float = 0.0, soft_targets: torch.Tensor | None = None,
                 distill_weight: float = 0.5, with_masks: bool = False) -> None:
        if with_masks and (transform is not None and not hasattr(transform, "with_mask")):
            raise ValueError("with_masks needs a transform that can move a mask (a preset's with_mask)")
        self.images, self.labels, self.positions, self.transform = images, labels, positions, transform
        self.with_masks = with_masks
        self.soft_targets, self.distill_weight = soft_targets, distill_weight
        self.boxes, self.counterfactual, self.context_mix = boxes, counterfactual, context_mix
        # where tumours sit in these slices: control regions are drawn around such places
        self.sites = [(b[0], b[1]) for b in (boxes[k] for k in positions) if b is not None] if boxes else []
        self.boxed = [k for k in positions if boxes[k] is not None] if boxes else []  # contexts to mix into

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        k = self.positions[i]
        image, label = self.images[k], int(self.labels[k])
        box = self.boxes[k] if self.boxes is not None else None
        if (self.counterfactual > 0 or self.context_mix > 0) and box is not None:
            # torch's generator is seeded per run and per loader worker; numpy's is drawn from it
            rng = np.random.default_rng(int(torch.randint(2**31 - 1, (1,))))
            # no draw without mixing: counterfactual runs repeat as they did before mixing existed
            mix = self.context_mix > 0 and rng.random() < self.context_mix
            mixed = self._mixed(image, box, k, rng) if mix else None
            if mixed is not None:
                image = mixed
            elif self.counterfactual > 0:
                image, label = counterfactual(image, box, label, self.counterfactual, rng, self.sites)
        mask = self._mask(box, image) if self.with_masks else None
        if self.transform is not None and mask is not None:
            image, mask = self.transform.with_mask(image, mask)  # type: ignore[attr-defined]
        elif self.transform is not None:
            image = self.transform(image)
        target: int | torch.Tensor = label
        if self.soft_targets is not None:  # distillation: the label mixed with the teachers' answer
            target = distilled_target(label, self.soft_targets[k], self.distill_weight)
        return (image, target) if mask is None else (image, target, mask)  # type: ignore[return-value]

    @staticmethod
    def _mask(box: Box | None, image: torch.Tensor) -> torch.Tensor:
        """The grown tumour box as a uint8 ``[1, H, W]`` mask; all zero where no box is known."""
        shape = (int(image.shape[-2]), int(image.shape[-1]))
        inside = box_mask(box, shape, MASK_GROW) if box is not None else np.zeros(shape, dtype=bool)
        return torch.from_numpy(inside.astype(np.uint8))[None]

    def _mixed(self, image: torch.Tensor, box: Box, k: int, rng: np.random.Generator,
               tries: int = 3) -> torch.Tensor | None:
        """``image``'s tumour in the context of another boxed slice (a few donors tried); None where
        none has tissue where the tumour goes."""
        assert self.boxes is not None
        plain = image[0].numpy().astype(np.float32) / 255.0
        for _ in range(tries):
            donor = self.boxed[int(rng.integers(len(self.boxed)))]
            donor_box = self.boxes[donor]
            if donor == k or donor_box is None:
                continue
            mixed = context_mixed(plain, box, self.images[donor][0].numpy().astype(np.float32) / 255.0, donor_box, rng)
            if mixed is not None:
                return torch.from_numpy(np.round(np.clip(mixed, 0, 1) * 255).astype(np.uint8))[None]
        return None


def balanced_sampler(labels: torch.Tensor, seed: int) -> WeightedRandomSampler:
    """Oversample rare classes so every class is drawn equally often."""
    counts = torch.bincount(labels).float()
    weights = (1.0 / counts)[labels]
    generator = torch.Generator().manual_seed(seed)
    # torch annotates weights as Sequence[float]; it takes any array (torch.as_tensor), a tensor included
    return WeightedRandomSampler(weights.double(), len(labels), replacement=True,  # type: ignore[arg-type]
                                 generator=generator)


class SliceDataModule(L.LightningDataModule):
    """Train/val/test loaders over a :class:`Split` of a decoded image tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, split: Split,
                 train_transform: Callable[[torch.Tensor], torch.Tensor],
                 batch_size: int = 32, num_workers: int = 0, oversample: bool = False,
                 seed: int = 0, boxes: Sequence[Box | None] | None = None, counterfactual: float = 0.0,
                 context_mix: float = 0.0, soft_targets: torch.Tensor | None = None,
                 distill_weight: float = 0.5, with_masks: bool = False) -> None:
        super().__init__()
        self.with_masks = with_masks  # training items carry tumour masks (the context penalty)
        self.soft_targets, self.distill_weight = soft_targets, distill_weight
        self.images, self.labels, self.split = images, labels, split
        self.train_transform, self.batch_size, self.num_workers = train_transform, batch_size, num_workers
        self.oversample, self.seed = oversample, seed
        self.boxes, self.counterfactual, self.context_mix = boxes, counterfactual, context_mix

    def _loader(self, positions: list[int], train: bool) -> DataLoader[tuple[torch.Tensor, int]]:
        dataset = SliceDataset(self.images, self.labels, positions,
                               self.train_transform if train else None,
                               self.boxes, self.counterfactual if train else 0.0,
                               self.context_mix if train else 0.0, self.soft_targets if train else None,
                               self.distill_weight, with_masks=self.with_masks and train)
        sampler = balanced_sampler(self.labels[positions], self.seed) if train and self.oversample else None
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=train and sampler is None,
                          sampler=sampler, num_workers=self.num_workers, drop_last=train,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader[tuple[torch.Tensor, int]]:
        return self._loader(self.split.train, train=True)

    def val_dataloader(self) -> DataLoader[tuple[torch.Tensor, int]]:
        return self._loader(self.split.val, train=False)

    def test_dataloader(self) -> DataLoader[tuple[torch.Tensor, int]]:
        return self._loader(self.split.test, train=False)
