"""Run a network over decoded images and return logits or class probabilities."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from brain_tumor.model.backbone import Preprocessing
from brain_tumor.transforms import Normalize


@torch.inference_mode()
def predict_logits(network: nn.Module, preprocessing: Preprocessing, images: torch.Tensor,
                   batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Logits ``[N, classes]`` for uint8 ``[N, 1, H, W]`` images."""
    network = network.eval().to(memory_format=torch.channels_last)
    normalize = Normalize(preprocessing)
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc="predicting", disable=not progress):
        x = normalize(images[start:start + batch_size]).contiguous(memory_format=torch.channels_last)
        out.append(network(x).float())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def predict_probabilities(network: nn.Module, preprocessing: Preprocessing, images: torch.Tensor,
                          batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Softmax probabilities ``[N, classes]`` for uint8 ``[N, 1, H, W]`` images."""
    logits = predict_logits(network, preprocessing, images, batch_size, progress)
    return torch.from_numpy(logits).softmax(1).numpy()
