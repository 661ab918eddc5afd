"""Test-time adaptation of BatchNorm statistics to a new source (AdaBN, Li et al. 2016; with a
prior on the training statistics, Schneider et al. 2020, "Improving robustness against common
corruptions by covariate shift adaptation").

A network trained on one scanner normalises every layer with that scanner's feature means and
variances. Re-estimating them on unlabelled images of the new source (a folder of its slices)
moves the normalisation to where its features lie; no weight changes and no labels are used.
``prior`` keeps a share of the training statistics: with few images a full re-estimate is noisy.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from brain_tumor.inference import Predictor

log = logging.getLogger(__name__)

MIN_IMAGES = 16  # below this a re-estimate of per-channel statistics is mostly noise


def batchnorm_layers(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapt_batchnorm(network: nn.Module, batches: Iterable[torch.Tensor], prior: float = 0.0) -> nn.Module:
    """A copy of ``network`` whose BatchNorm running means and variances are the average over
    ``batches`` (network inputs, as the model reads them) mixed with ``prior`` of the training
    ones; the original is not touched. Raises ``ValueError`` on fewer than :data:`MIN_IMAGES`."""
    if not 0 <= prior < 1:
        raise ValueError("prior must be in [0, 1): the share of the training statistics kept")
    adapted = copy.deepcopy(network).eval()
    layers = batchnorm_layers(adapted)
    if not layers:
        raise ValueError("the network has no BatchNorm layer to adapt")
    source = [(m.running_mean.clone(), m.running_var.clone()) for m in layers  # type: ignore[union-attr]
              if m.running_mean is not None]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches, not an exponential one
        m.train()
    seen = 0
    for x in batches:
        adapted(x)
        seen += len(x)
    if seen < MIN_IMAGES:
        raise ValueError(f"BatchNorm adaptation needs at least {MIN_IMAGES} images of the new source, got {seen}")
    for m, (mean, var) in zip(layers, source):
        m.running_mean.mul_(1 - prior).add_(prior * mean)  # type: ignore[union-attr]
        m.running_var.mul_(1 - prior).add_(prior * var)  # type: ignore[union-attr]
    log.info("BatchNorm statistics of %d layers re-estimated on %d images (prior %.2f)", len(layers), seen, prior)
    return adapted.eval()


def adapted_predictor(predictor: Predictor, images: torch.Tensor, prior: float = 0.0, batch: int = 64) -> Predictor:
    """A copy of ``predictor`` whose network is adapted to ``images`` (uint8 ``[N, 1, S, S]``, as
    :meth:`Predictor.to_tensor` makes them) and served by PyTorch (an ONNX export holds the
    training statistics, so it is set aside)."""
    network = adapt_batchnorm(predictor.network, (predictor.model_input(images[i:i + batch])
                                                  for i in range(0, len(images), batch)), prior)
    adapted = copy.copy(predictor)
    adapted.network, adapted.onnx = network, None
    adapted.compute = {**predictor.compute, "engine": f"pytorch, BatchNorm adapted on {len(images)} images "
                                                      f"(prior {prior:g}); exports set aside"}
    return adapted


def adapt_to_files(predictor: Predictor, paths: Iterable[str | Path], prior: float = 0.0) -> Predictor:
    """:func:`adapted_predictor` on the readable slices among ``paths`` (a folder of the new
    source's images; unreadable files are left out, as predictions would report them)."""
    from brain_tumor.data.imageio import ImageReadError, read_slice

    tensors = []
    for path in paths:
        try:
            tensors.append(predictor.to_tensor(read_slice(path)))
        except (ImageReadError, OSError, ValueError):
            continue
    if len(tensors) < MIN_IMAGES:
        raise ValueError(f"BatchNorm adaptation needs at least {MIN_IMAGES} readable images of the new source, "
                         f"got {len(tensors)}")
    return adapted_predictor(predictor, torch.stack(tensors), prior)
