"""The LightningModule: forward, loss, optimiser and LR schedule; nothing about data."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from brain_tumor.data.counterfactual import ERASED
from brain_tumor.model import Preprocessing, forward_fp32_stem, set_frozen_batchnorm_eval
from brain_tumor.transforms import Normalize


class SliceClassifier(L.LightningModule):
    """Cross-entropy fine-tuning of a classifier with Adam and ReduceLROnPlateau.

    Args:
        network: the classifier (its frozen parameters already have ``requires_grad=False``).
        preprocessing: normalisation of the network's weights.
        lr, weight_decay: Adam settings.
        plateau_factor, plateau_patience: ReduceLROnPlateau on validation loss.
        class_weights: optional per-class loss weights (class imbalance).
        channels_last: run convolutions in channels-last memory format.

    A training slice labelled :data:`~brain_tumor.data.counterfactual.ERASED` (its tumour erased)
    is pulled towards no class at all: its target is the uniform distribution over the classes
    (as in outlier exposure, Hendrycks et al. 2019), so the slice's context alone is no evidence.
    """

    def __init__(self, network: nn.Module, preprocessing: Preprocessing, lr: float = 1e-4,
                 weight_decay: float = 0.0, plateau_factor: float = 0.2, plateau_patience: int = 1,
                 class_weights: torch.Tensor | None = None, channels_last: bool = True) -> None:
        super().__init__()
        self.network = network.to(memory_format=torch.channels_last) if channels_last else network
        self.normalize = Normalize(preprocessing)
        self.lr, self.weight_decay = lr, weight_decay
        self.plateau_factor, self.plateau_patience = plateau_factor, plateau_patience
        self.channels_last = channels_last
        self.loss_fn = nn.CrossEntropyLoss(weight=class_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalize(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return forward_fp32_stem(self.network, x)  # same as network(x) in fp32; safe under bf16 autocast

    def train(self, mode: bool = True) -> SliceClassifier:
        super().train(mode)
        if mode:  # frozen BatchNorm stays in inference mode, as in tf.keras
            set_frozen_batchnorm_eval(self.network)
        return self

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images).float()  # loss and softmax in fp32 under mixed precision
        erased = labels == ERASED
        acc: torch.Tensor | None
        if not erased.any():
            loss: torch.Tensor = self.loss_fn(logits, labels)
            acc = (logits.argmax(1) == labels).float().mean()
        else:
            loss = counterfactual_loss(logits, labels, self.loss_fn.weight)
            acc = (logits[~erased].argmax(1) == labels[~erased]).float().mean() if (~erased).any() else None
            self.log(f"{stage}_erased_confidence", logits[erased].softmax(1).amax(1).mean(), on_step=False,
                     on_epoch=True, batch_size=int(erased.sum()))
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        if acc is not None:  # accuracy over the slices that keep a class
            self.log(f"{stage}_acc", acc, on_step=False, on_epoch=True, prog_bar=on_step or stage == "val",
                     batch_size=int((~erased).sum()))
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits: torch.Tensor = self(batch[0])
        return logits.float()

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.plateau_factor, patience=self.plateau_patience)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch"}}


def counterfactual_loss(logits: torch.Tensor, labels: torch.Tensor,
                        class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy to the label for ordinary slices (with ``class_weights``, as the plain loss)
    and to the uniform distribution, unweighted, for slices labelled :data:`ERASED` (tumour
    erased: no class is right); the two averaged by their shares of the batch."""
    kept = labels != ERASED
    n = len(labels)
    loss = logits.new_zeros(())
    if kept.any():
        loss = loss + F.cross_entropy(logits[kept], labels[kept], weight=class_weights) * (int(kept.sum()) / n)
    if (~kept).any():
        uniform = -F.log_softmax(logits[~kept], dim=1).mean(dim=1)  # cross-entropy to 1/C each
        loss = loss + uniform.sum() / n
    return loss
