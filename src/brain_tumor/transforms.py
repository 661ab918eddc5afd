"""Named transform presets (train/eval) and the normalisation taken from the weights' metadata.

Images travel as uint8 ``[1, H, W]`` tensors, already resized by the dataset cache; the model
input is made on the fly by :func:`normalize_batch` (grey -> 3 channels, weights' mean/std).
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import tv_tensors
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
        out: torch.Tensor = self.transform(image)
        return out

    def with_mask(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` and a mask of it (``[1, H, W]``) moved by the same geometry; the mask keeps its
        values (brightness changes the image only)."""
        out, moved = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return out.as_subclass(torch.Tensor), moved.as_subclass(torch.Tensor)


class RandomGamma:
    """x ** gamma with gamma drawn log-uniformly from ``gammas`` (sequence contrast changes)."""

    def __init__(self, gammas: tuple[float, float] = (0.6, 1.6)) -> None:
        self.log_low, self.log_high = math.log(gammas[0]), math.log(gammas[1])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        gamma = math.exp(random.uniform(self.log_low, self.log_high))
        return x.clamp(0, 1) ** gamma


class BiasField:
    """Multiply by a smooth random field exp(quadratic in x, y), like MRI coil inhomogeneity."""

    def __init__(self, strength: float = 0.3) -> None:
        self.strength = strength

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        terms = torch.stack([xx, yy, xx * yy, xx**2, yy**2])
        coeffs = (torch.rand(5) * 2 - 1) * self.strength
        return x * torch.exp((coeffs.view(5, 1, 1) * terms).sum(0))


class DownUp:
    """Lose resolution: downsample by a random factor in ``factors`` and upsample back."""

    def __init__(self, factors: tuple[float, float] = (0.25, 0.75)) -> None:
        self.factors = factors

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        f = random.uniform(*self.factors)
        small = F.interpolate(x[None], size=(max(int(h * f), 8), max(int(w * f), 8)), mode="bilinear",
                              antialias=True)
        return F.interpolate(small, size=(h, w), mode="bilinear")[0]


class GaussianNoise:
    """Additive Gaussian noise with sigma drawn from [0, ``max_sigma``]."""

    def __init__(self, max_sigma: float = 0.05) -> None:
        self.max_sigma = max_sigma

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x) * random.uniform(0, self.max_sigma)


def geometry_then_intensity(geometry: Callable[[torch.Tensor], torch.Tensor],
                            intensity: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    """uint8 ``[1, H, W]`` -> geometric transform -> intensity transforms on [0, 1] floats -> uint8."""
    x = intensity(geometry(image).float() / 255.0)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


class GeometryThenIntensity:
    """A preset made of a geometric part (torchvision v2, so a mask can follow it) and an intensity
    part on [0, 1] floats; uint8 ``[1, H, W]`` in and out."""

    geometry: v2.Compose
    intensity: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return geometry_then_intensity(self.geometry, self.intensity, image)

    def with_mask(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` transformed, and its mask (``[1, H, W]``) moved by the same geometry."""
        moved, moved_mask = self.geometry(tv_tensors.Image(image), tv_tensors.Mask(mask))
        x = self.intensity(moved.as_subclass(torch.Tensor).float() / 255.0)
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), moved_mask.as_subclass(torch.Tensor)


class RobustTrainPreset(GeometryThenIntensity):
    """Augmentation for scanner, sequence and framing shift, beyond the paper's set: wider zoom
    and shift (framing), JPEG re-compression, gamma/contrast, blur and sharpening, resolution
    loss, bias field and noise. uint8 ``[1, H, W]`` in and out."""

    def __init__(self) -> None:
        self.geometry = v2.Compose([
            v2.RandomAffine(degrees=20.0, translate=(0.12, 0.12), scale=(0.7, 1.3)),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomApply([v2.JPEG(quality=(15, 95))], p=0.3),
        ])
        self.intensity = v2.Compose([
            v2.RandomApply([RandomGamma()], p=0.5),
            v2.ColorJitter(brightness=0.3, contrast=0.4),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 2.0))], p=0.25),
            v2.RandomAdjustSharpness(2.0, p=0.25),
            v2.RandomApply([DownUp()], p=0.3),
            v2.RandomApply([BiasField()], p=0.5),
            v2.RandomApply([GaussianNoise()], p=0.3),
        ])


class LightShiftPreset(GeometryThenIntensity):
    """The paper's augmentation plus only the shifts that robust preprocessing cannot undo:
    gamma (sequence contrast), resolution loss (down/up-sampling, optionally blur) and noise, each
    on a minority of images.

    Contrast, framing and bit depth need no augmentation once slices are cropped to the head and
    standardised; the full :class:`RobustTrainPreset` also trains on them (and on JPEG, blur,
    bias field and wider framing), which costs accuracy on clean slices. uint8 ``[1, H, W]`` in
    and out."""

    def __init__(self, *, gammas: tuple[float, float] = (0.5, 3.0), p_gamma: float = 0.3,
                 p_downup: float = 0.25, p_blur: float = 0.0, p_noise: float = 0.2) -> None:
        self.geometry = PaperTrainPreset().transform  # torchvision v2: a mask can follow it
        blur = [v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 2.0))], p=p_blur)] if p_blur else []
        self.intensity = v2.Compose([
            v2.RandomApply([RandomGamma(gammas)], p=p_gamma),
            v2.RandomApply([DownUp()], p=p_downup),
            *blur,  # only when asked for, so robust-light draws the same random numbers as before
            v2.RandomApply([GaussianNoise()], p=p_noise),
        ])


class TorchIOPreset(GeometryThenIntensity):
    """The paper's augmentation, then MR acquisition artefacts simulated by TorchIO (Perez-Garcia
    et al. 2021) on a minority of images: bias field, gamma, one of ghosting / motion / spike
    (k-space artefacts), blur and noise. A slice is TorchIO's ``[C, W, H, D]`` with ``D = 1``, so
    motion and ghosting stay in plane. uint8 ``[1, H, W]`` in and out; TorchIO draws from torch's
    random generator, so a seeded run repeats."""

    def __init__(self) -> None:
        import torchio as tio  # SimpleITK and nibabel come with it: load only when this preset is used

        self.geometry = PaperTrainPreset().transform  # torchvision v2: a mask can follow it
        self.artefacts = tio.Compose([
            tio.RandomBiasField(coefficients=0.3, p=0.3),
            tio.RandomGamma(log_gamma=(-0.4, 0.4), p=0.3),
            tio.OneOf({tio.RandomGhosting(axes=(0, 1), intensity=(0.2, 0.6)): 1.0,
                       tio.RandomMotion(degrees=5, translation=5, num_transforms=2): 1.0,
                       tio.RandomSpike(intensity=(0.1, 0.4)): 1.0}, p=0.2),
            tio.RandomBlur(std=(0, 1, 0, 1, 0, 0), p=0.2),  # type: ignore[arg-type]  # per-axis ranges (documented): none across the one-slice depth
            tio.RandomNoise(std=(0, 0.03), p=0.2),
        ])
        self.intensity = self._artefacts

    def _artefacts(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.artefacts(x.unsqueeze(-1))[..., 0]
        return out


class EvalPreset:
    """No change: resizing happened when the dataset was decoded."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image

    def with_mask(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return image, mask


TrainPreset: TypeAlias = PaperTrainPreset | RobustTrainPreset | LightShiftPreset | TorchIOPreset | EvalPreset

PRESETS: dict[str, Callable[[], TrainPreset]] = {
    "paper": PaperTrainPreset, "robust": RobustTrainPreset, "robust-light": LightShiftPreset,
    # more resolution loss and blur than robust-light, still the paper's geometry
    "robust-mid": functools.partial(LightShiftPreset, p_downup=0.4, p_blur=0.2),
    "torchio": TorchIOPreset,  # the paper's geometry + MR artefacts from TorchIO
    "none": EvalPreset}


def train_preset(name: str) -> TrainPreset:
    """Look up a training augmentation preset by name."""
    if name not in PRESETS:
        raise ValueError(f"augmentation must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]()


class Normalize(nn.Module):
    """uint8 or [0, 1] float ``[B, 1|3, H, W]`` -> normalised float ``[B, 3, H, W]``."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(preprocessing.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocessing.std).view(1, 3, 1, 1))

    if TYPE_CHECKING:  # nn.Module.__call__ is typed as returning Any; calling runs forward
        def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std
