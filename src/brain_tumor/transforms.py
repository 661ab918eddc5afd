"""Named transform presets (train/eval) and the normalisation taken from the weights' metadata.

Images travel as uint8 ``[1, H, W]`` tensors, already resized by the dataset cache; the model
input is made on the fly by :func:`normalize_batch` (grey -> 3 channels, weights' mean/std).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms import v2

from brain_tumor.model.backbone import Preprocessing


class PaperTrainPreset:
    """The paper's augmentation: rotation, zoom, shift (crop), both flips and brightness."""

    def __init__(self, *, degrees: float = 20.0, zoom: tuple[float, float] = (0.8, 1.2),
                 shift: float = 0.1, brightness: float = 0.2) -> None:
        self.transform = v2.Compose([
            v2.RandomAffine(degrees=degrees, translate=(shift, shift), scale=zoom),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.ColorJitter(brightness=brightness),
        ])

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.transform(image)


class EvalPreset:
    """No change: resizing happened when the dataset was decoded."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image


PRESETS = {"paper": PaperTrainPreset, "none": EvalPreset}


def train_preset(name: str) -> PaperTrainPreset | EvalPreset:
    """Look up a training augmentation preset by name."""
    if name not in PRESETS:
        raise ValueError(f"augmentation must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]()


class Normalize(nn.Module):
    """uint8 or [0, 1] float ``[B, 1|3, H, W]`` -> normalised float ``[B, 3, H, W]``."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std
