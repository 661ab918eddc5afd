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
from brain_tumor.model import (
    Preprocessing,
    classify_features,
    has_tumour_map,
    set_frozen_batchnorm_eval,
    stage_features_fp32_stem,
    tumour_evidence,
    tumour_map_logits,
)
from brain_tumor.training.losses import context_evidence_penalty, counterfactual_loss, tumour_map_loss
from brain_tumor.transforms import Normalize

# (images, labels) or, for the context penalty and the tumour map, (images, labels, tumour masks)
Batch = tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]


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

        context_penalty: weight of :func:`context_evidence_penalty` in the training loss, for
            batches that carry tumour masks (a third element); 0 leaves it out.
        tumour_map: weight of :func:`tumour_map_loss` (the network must carry the head of
            :func:`brain_tumor.model.add_tumour_map`), for batches that carry tumour masks.

    A training slice labelled :data:`~brain_tumor.data.counterfactual.ERASED` (its tumour erased)
    is pulled towards no class at all: its target is the uniform distribution over the classes
    (as in outlier exposure, Hendrycks et al. 2019), so the slice's context alone is no evidence.
    """

    def __init__(self, network: nn.Module, preprocessing: Preprocessing, lr: float = 1e-4,
                 weight_decay: float = 0.0, plateau_factor: float = 0.2, plateau_patience: int = 1,
                 class_weights: torch.Tensor | None = None, channels_last: bool = True,
                 optimizer: str = "adam", schedule: str = "plateau", warmup_epochs: int = 0,
                 label_smoothing: float = 0.0, mixup_alpha: float = 0.0, num_classes: int = 3,
                 context_penalty: float = 0.0, tumour_map: float = 0.0) -> None:
        super().__init__()
        if tumour_map > 0 and not has_tumour_map(network):
            raise ValueError("tumour_map > 0 needs a network with a tumour map (brain_tumor.model.add_tumour_map)")
        self.network = network.to(memory_format=torch.channels_last) if channels_last else network
        self.normalize = Normalize(preprocessing)
        self.lr, self.weight_decay = lr, weight_decay
        self.optimizer_name, self.schedule, self.warmup_epochs = optimizer, schedule, warmup_epochs
        self.plateau_factor, self.plateau_patience = plateau_factor, plateau_patience
        self.channels_last = channels_last
        self.loss_fn = nn.CrossEntropyLoss(weight=class_weights)
        self.label_smoothing = label_smoothing
        self.mix = batch_mixer(mixup_alpha, num_classes) if mixup_alpha > 0 else None
        self.context_penalty = context_penalty
        self.tumour_map_weight = tumour_map

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._classify(self.normalize(images))

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of normalised images."""
        return self._classify_with_penalty(x, None, None)[0]

    def _classify_with_penalty(self, x: torch.Tensor, masks: torch.Tensor | None,
                               labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits of normalised images and, given tumour ``masks`` (and the batch's ``labels``), the
        weighted sum of :func:`context_evidence_penalty` and :func:`tumour_map_loss`, each logged
        unweighted (``train_context_penalty``, ``train_tumour_map_loss``)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        third, features = stage_features_fp32_stem(self.network, x)  # the stem in fp32: safe under bf16 autocast
        logits = classify_features(self.network, features)
        if masks is None:
            return logits, None
        extra = logits.new_zeros((), dtype=torch.float32)
        if self.context_penalty > 0:
            head = self.network.fc
            assert isinstance(head, nn.Linear)
            with torch.autocast(device_type=x.device.type, enabled=False):  # in fp32, whatever autocast is on
                penalty = context_evidence_penalty(features.float(), head.weight.float(), masks)
            self.log("train_context_penalty", penalty, on_step=False, on_epoch=True, batch_size=len(x))
            extra = extra + self.context_penalty * penalty
        if self.tumour_map_weight > 0:
            erased = labels == ERASED if labels is not None and labels.ndim == 1 else torch.zeros(
                len(x), dtype=torch.bool, device=x.device)
            map_loss = tumour_map_loss(tumour_map_logits(self.network, third), masks, erased)
            self.log("train_tumour_map_loss", map_loss, on_step=False, on_epoch=True, batch_size=len(x))
            extra = extra + self.tumour_map_weight * map_loss
        return logits, extra

    @torch.inference_mode()
    def slice_evidence(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Tumour evidence ``[N]`` (:func:`brain_tumor.model.tumour_evidence`) of uint8 ``[N, 1, S, S]``
        slices, in fp32, the network in eval mode (restored afterwards)."""
        was_training = self.training
        self.eval()
        try:
            out = []
            for start in range(0, len(images), batch_size):
                x = self.normalize(images[start:start + batch_size])
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                third, _ = stage_features_fp32_stem(self.network, x)
                out.append(tumour_evidence(tumour_map_logits(self.network, third)))
            return torch.cat(out) if out else torch.zeros(0)
        finally:
            self.train(was_training)

    def train(self, mode: bool = True) -> SliceClassifier:
        super().train(mode)
        if mode:  # frozen BatchNorm stays in inference mode, as in tf.keras
            set_frozen_batchnorm_eval(self.network)
        return self

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor,
                    masks: torch.Tensor | None = None) -> torch.Tensor | None:
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
        raw, penalty = self._classify_with_penalty(x, masks, labels)
        logits = raw.float()
        loss = F.cross_entropy(logits, targets, weight=self.loss_fn.weight, label_smoothing=self.label_smoothing)
        if penalty is not None:
            loss = loss + penalty
        hard = targets.argmax(1) if targets.ndim == 2 else targets
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        self.log("train_acc", (logits.argmax(1) == hard).float().mean(), on_step=False, on_epoch=True,
                 prog_bar=True, batch_size=len(labels))
        return loss

    def _step(self, batch: Batch, stage: str) -> torch.Tensor:
        images, labels = batch[0], batch[1]
        wants_masks = self.context_penalty > 0 or self.tumour_map_weight > 0
        masks = batch[2] if len(batch) > 2 and stage == "train" and wants_masks else None
        if stage == "train" and (mixed := self._train_step(images, labels, masks)) is not None:
            return mixed
        raw, penalty = self._classify_with_penalty(self.normalize(images), masks, labels)
        logits = raw.float()  # loss and softmax in fp32 under mixed precision
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
        if penalty is not None:
            loss = loss + penalty
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels))
        if acc is not None:  # accuracy over the slices that keep a class
            self.log(f"{stage}_acc", acc, on_step=False, on_epoch=True, prog_bar=on_step or stage == "val",
                     batch_size=int((~erased).sum()))
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def predict_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
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
