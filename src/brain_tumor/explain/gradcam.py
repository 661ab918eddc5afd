"""Grad-CAM on the last ResNet stage (pytorch-grad-cam) and overlays."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from brain_tumor.transforms import Normalize


class _WithNormalize(nn.Module):
    def __init__(self, network: nn.Module, normalize: Normalize) -> None:
        super().__init__()
        self.network, self.normalize = network, normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.network(self.normalize(x))
        return logits


def grad_cam(network: nn.Module, normalize: Normalize, images: torch.Tensor,
             classes: list[int] | None = None) -> np.ndarray:
    """CAMs ``[B, H, W]`` in [0, 1] for uint8 ``[B, 1, H, W]`` images (predicted class by default)."""
    model = _WithNormalize(network.eval(), normalize).eval()
    x = images.float() / 255.0  # Normalize accepts [0, 1] floats; gradients need float input
    targets = [ClassifierOutputTarget(c) for c in classes] if classes is not None else None
    with GradCAM(model=model, target_layers=[network.layer4[-1]]) as cam:  # type: ignore[index]
        cams: np.ndarray = np.asarray(cam(input_tensor=x, targets=targets), dtype=np.float32)
        return cams


def overlay(image: np.ndarray, cam: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """uint8 RGB: the grey slice with the CAM drawn over it in the 'jet' colour map."""
    grey = np.repeat((image.astype(np.float32) / 255.0)[..., None], 3, axis=-1)
    heat = colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
    blended: np.ndarray = np.clip((1 - opacity) * grey + opacity * heat, 0, 1)
    return (255 * blended).astype(np.uint8)
