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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from brain_tumor.inference import Predictor

log = logging.getLogger(__name__)

MIN_IMAGES = 16  # below this a re-estimate of per-channel statistics is mostly noise


@dataclass
class Moments:
    """Per-channel sums of x and x**2 over every position of every image seen (float64)."""

    total: torch.Tensor | None = None
    total_sq: torch.Tensor | None = None
    n: int = 0

    def add(self, x: torch.Tensor) -> None:
        flat = x.detach().double().transpose(0, 1).flatten(1)  # channels x (batch * positions)
        self.total = flat.sum(1) if self.total is None else self.total + flat.sum(1)
        squares = (flat * flat).sum(1)
        self.total_sq = squares if self.total_sq is None else self.total_sq + squares
        self.n += flat.shape[1]

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and unbiased variance, as BatchNorm keeps them."""
        assert self.total is not None and self.total_sq is not None
        mean = self.total / self.n
        return mean, (self.total_sq / self.n - mean * mean).clamp_min(0) * self.n / max(self.n - 1, 1)


def batchnorm_layers(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapt_batchnorm(network: nn.Module, batches: Iterable[torch.Tensor], prior: float = 0.0) -> nn.Module:
    """A copy of ``network`` whose BatchNorm running means and variances are the moments of each
    layer's inputs pooled over every image of ``batches`` (network inputs, as the model reads them;
    pass them in a random order, as :func:`adapted_predictor` does), mixed with ``prior`` of the
    training ones; the original is not touched. Raises ``ValueError`` on fewer than
    :data:`MIN_IMAGES` images.

    The forward passes normalise with each batch's own statistics (train mode), as AdaBN does, but
    the stored moments are pooled exactly over all images (sums of x and x**2), so neither the
    differences between batch means nor a short last batch bias them."""
    if not 0 <= prior < 1:
        raise ValueError("prior must be in [0, 1): the share of the training statistics kept")
    adapted = copy.deepcopy(network).eval()
    layers = [m for m in batchnorm_layers(adapted) if m.running_mean is not None and m.running_var is not None]
    if not layers:
        raise ValueError("the network has no BatchNorm layer with running statistics to adapt")
    # the train-mode passes below move the running statistics: keep the training ones
    source = {m: (m.running_mean.clone(), m.running_var.clone()) for m in layers}  # type: ignore[union-attr]
    moments: dict[nn.Module, Moments] = {}

    def collect(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        moments.setdefault(module, Moments()).add(inputs[0])

    hooks = [m.register_forward_pre_hook(collect) for m in layers]
    for m in layers:
        m.train()
    seen = 0
    try:
        for x in batches:
            adapted(x)
            seen += len(x)
    finally:
        for h in hooks:
            h.remove()
        adapted.eval()
    if seen < MIN_IMAGES:
        raise ValueError(f"BatchNorm adaptation needs at least {MIN_IMAGES} images of the new source, got {seen}")
    for m in layers:
        mean, var = moments[m].mean_var()
        assert m.running_mean is not None and m.running_var is not None
        m.running_mean.copy_(prior * source[m][0] + (1 - prior) * mean.to(m.running_mean.dtype))
        m.running_var.copy_(prior * source[m][1] + (1 - prior) * var.to(m.running_var.dtype))
    log.info("BatchNorm statistics of %d layers re-estimated on %d images (prior %.2f)", len(layers), seen, prior)
    return adapted


def adapted_predictor(predictor: Predictor, images: torch.Tensor, prior: float = 0.0, batch: int = 64,
                      seed: int = 0) -> Predictor:
    """A copy of ``predictor`` whose network is adapted to ``images`` (uint8 ``[N, 1, S, S]``, as
    :meth:`Predictor.to_tensor` makes them) and served by PyTorch (an ONNX export holds the
    training statistics, so it is set aside)."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))  # batches mix classes
    network = adapt_batchnorm(predictor.network, (predictor.model_input(images[order[i:i + batch]])
                                                  for i in range(0, len(images), batch)), prior)
    adapted = copy.copy(predictor)
    adapted.network, adapted.onnx = network, None
    fitted = [name for name, present in (("temperature", predictor.temperature != 1.0),
                                         ("referral threshold", predictor.refer_threshold is not None),
                                         ("prediction sets", predictor.conformal is not None),
                                         ("no-tumour gate", predictor.gate is not None),
                                         ("OOD detector", predictor.ood is not None)) if present]
    if fitted:
        log.warning("BatchNorm adapted; fitted on the unadapted network, so their stated rates may not hold: %s",
                    ", ".join(fitted))
    adapted.compute = {**predictor.compute, "bn_adaptation": {
        "n_images": len(images), "prior": prior, "engine": "pytorch (exports hold the training statistics)"}}
    return adapted


def adapt_to_files(predictor: Predictor, paths: Iterable[str | Path], prior: float = 0.0) -> Predictor:
    """:func:`adapted_predictor` on the readable, in-scope slices among ``paths`` (a folder of the
    new source's images; unreadable files and images the scope check refuses are left out, as the
    answers would report them)."""
    from brain_tumor.data.imageio import ImageReadError, read_slice

    tensors = []
    for path in paths:
        try:
            image = read_slice(path)
        except (ImageReadError, OSError, ValueError):
            continue
        if predictor.out_of_scope_reason(path, image) is None:
            tensors.append(predictor.to_tensor(image))
    if len(tensors) < MIN_IMAGES:
        raise ValueError(f"BatchNorm adaptation needs at least {MIN_IMAGES} readable images of the new source, "
                         f"got {len(tensors)}")
    return adapted_predictor(predictor, torch.stack(tensors), prior)
