"""The LightningModule: forward, loss, optimiser and LR schedule; nothing about data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from brain_tumor.data.counterfactual import ERASED
from brain_tumor.model import Preprocessing, forward_fp32_stem, set_frozen_batchnorm_eval
from brain_tumor.transforms import Normalize


class SliceClassifier(L.LightningModule):
    """Cross-entropy fine-tuning of a classifier: the paper's Adam and ReduceLROnPlateau by default.

    Args:
        network: the classifier (its frozen parameters already have ``requires_grad=False``).
        preprocessing: normalisation of the network's weights.
        lr, weight_decay: optimiser settings.
        optimizer: ``adam`` (weight decay as an L2 term) or ``adamw`` (decoupled weight decay).
        schedule: ``plateau`` (ReduceLROnPlateau on validation loss, ``plateau_factor`` and
            ``plateau_patience``) or ``cosine`` (per step, to 0 at the last epoch, after a linear
            warm-up from ``lr/10`` over ``warmup_epochs``).
        class_weights: optional per-class loss weights (class imbalance).
        label_smoothing: smoothing of the training targets; validation loss, which chooses the
            checkpoint, is always the plain cross-entropy.
        mixup_alpha: > 0 mixes each training batch with MixUp or CutMix (torchvision), one at random.
        num_classes: the classifier's outputs (the width of the mixed targets).
        channels_last: run convolutions in channels-last memory format.

    A training slice labelled :data:`~brain_tumor.data.counterfactual.ERASED` (its tumour erased)
    is pulled towards no class at all: its target is the uniform distribution over the classes
    (as in outlier exposure, Hendrycks et al. 2019), so the slice's context alone is no evidence.
    """

    def __init__(self, network: nn.Module, preprocessing: Preprocessing, lr: float = 1e-4,
                 weight_decay: float = 0.0, plateau_factor: float = 0.2, plateau_patience: int = 1,
                 class_weights: torch.Tensor | None = None, channels_last: bool = True,
                 optimizer: str = "adam", schedule: str = "plateau", warmup_epochs: int = 0,
                 label_smoothing: float = 0.0, mixup_alpha: float = 0.0, num_classes: int = 3) -> None:
        super().__init__()
        self.network = network.to(memory_format=torch.channels_last) if channels_last else network
        self.normalize = Normalize(preprocessing)
        self.lr, self.weight_decay = lr, weight_decay
        self.optimizer_name, self.schedule, self.warmup_epochs = optimizer, schedule, warmup_epochs
        self.plateau_factor, self.plateau_patience = plateau_factor, plateau_patience
        self.channels_last = channels_last
        self.loss_fn = nn.CrossEntropyLoss(weight=class_weights)
        self.label_smoothing = label_smoothing
        self.mix = batch_mixer(mixup_alpha, num_classes) if mixup_alpha > 0 else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._classify(self.normalize(images))

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of normalised images."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return forward_fp32_stem(self.network, x)  # same as network(x) in fp32; safe under bf16 autocast

    def train(self, mode: bool = True) -> SliceClassifier:
        super().train(mode)
        if mode:  # frozen BatchNorm stays in inference mode, as in tf.keras
            set_frozen_batchnorm_eval(self.network)
        return self

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """Loss of a training batch when it is mixed, its targets smoothed or given as probabilities
        (distillation), else ``None`` (the shared path of :meth:`_step`). Mixing acts on normalised
        images (a linear map, so the same as mixing the pixels); accuracy is then against the
        larger share of each mixed target."""
        if self.mix is None and labels.ndim == 1 and (self.label_smoothing == 0 or bool((labels == ERASED).any())):
            return None  # erased slices (counterfactual training) take the shared path, smoothing included
        x = self.normalize(images)
        targets: torch.Tensor = labels  # class indices, or probability vectors (distillation)
        if self.mix is not None and labels.ndim == 1:
            x, targets = self.mix(x, labels)
        logits = self._classify(x).float()
        loss = F.cross_entropy(logits, targets, weight=self.loss_fn.weight, label_smoothing=self.label_smoothing)
        hard = targets.argmax(1) if targets.ndim == 2 else targets
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        self.log("train_acc", (logits.argmax(1) == hard).float().mean(), on_step=False, on_epoch=True,
                 prog_bar=True, batch_size=len(labels))
        return loss

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        if stage == "train" and (mixed := self._train_step(images, labels)) is not None:
            return mixed
        logits = self(images).float()  # loss and softmax in fp32 under mixed precision
        erased = labels == ERASED
        acc: torch.Tensor | None
        if not erased.any():
            loss: torch.Tensor = self.loss_fn(logits, labels)
            acc = (logits.argmax(1) == labels).float().mean()
        else:
            smoothing = self.label_smoothing if stage == "train" else 0.0
            loss = counterfactual_loss(logits, labels, self.loss_fn.weight, smoothing)
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
        optimizer_class = torch.optim.AdamW if self.optimizer_name == "adamw" else torch.optim.Adam
        optimizer = optimizer_class(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.schedule == "cosine":
            total = int(self.trainer.estimated_stepping_batches)
            warmup = round(total * self.warmup_epochs / max(self.trainer.max_epochs or 1, 1))
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": warmup_cosine(optimizer, total, warmup), "interval": "step"}}
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=self.plateau_factor, patience=self.plateau_patience)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch"}}


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int,
                  warmup_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up from a tenth of the learning rate over ``warmup_steps``, then cosine
    annealing to 0 at ``total_steps`` (PyTorch's own schedulers, chained)."""
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps - warmup_steps, 1))
    if warmup_steps <= 0:
        return cosine
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warmup_steps)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, cosine], milestones=[warmup_steps])


Mixer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def batch_mixer(alpha: float, classes: int) -> Mixer:
    """MixUp or CutMix, one chosen at random per batch (torchvision.transforms.v2): returns the
    mixed images and soft targets (one row per image, summing to 1)."""
    choices = [v2.MixUp(alpha=alpha, num_classes=classes), v2.CutMix(alpha=alpha, num_classes=classes)]
    mixer: Mixer = v2.RandomChoice(choices)
    return mixer


def counterfactual_loss(logits: torch.Tensor, labels: torch.Tensor,
                        class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy to the label for ordinary slices (with ``class_weights`` and
    ``label_smoothing``, as the plain loss) and to the uniform distribution, unweighted, for slices
    labelled :data:`ERASED` (tumour erased: no class is right); the two averaged by their shares of
    the batch. Smoothing leaves the erased target as it is: it is uniform already."""
    kept = labels != ERASED
    n = len(labels)
    loss = logits.new_zeros(())
    if kept.any():
        loss = loss + F.cross_entropy(logits[kept], labels[kept], weight=class_weights,
                                      label_smoothing=label_smoothing) * (int(kept.sum()) / n)
    if (~kept).any():
        uniform = -F.log_softmax(logits[~kept], dim=1).mean(dim=1)  # cross-entropy to 1/C each
        loss = loss + uniform.sum() / n
    return loss
