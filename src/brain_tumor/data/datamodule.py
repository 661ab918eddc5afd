"""Dataset over the decoded uint8 cache and the Lightning DataModule around a split."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from brain_tumor.data.splits import Split


class SliceDataset(Dataset[tuple[torch.Tensor, int]]):
    """``(uint8 [1, H, W], label)`` for the chosen positions, with an optional transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, positions: list[int],
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.images, self.labels, self.positions, self.transform = images, labels, positions, transform

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        k = self.positions[i]
        image = self.images[k]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[k])


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
                 seed: int = 0) -> None:
        super().__init__()
        self.images, self.labels, self.split = images, labels, split
        self.train_transform, self.batch_size, self.num_workers = train_transform, batch_size, num_workers
        self.oversample, self.seed = oversample, seed

    def _loader(self, positions: list[int], train: bool) -> DataLoader[tuple[torch.Tensor, int]]:
        dataset = SliceDataset(self.images, self.labels, positions,
                               self.train_transform if train else None)
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
