"""Small training policies as callbacks."""

from __future__ import annotations

import logging
import time

import lightning as L

log = logging.getLogger("brain_tumor.training")


class EpochTimer(L.Callback):
    """Log each training epoch's wall time as ``epoch_seconds`` (survives resumption via logs)."""

    def __init__(self) -> None:
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.log("epoch_seconds", time.perf_counter() - self._start, on_epoch=True)
        images = len(trainer.train_dataloader.dataset) if trainer.train_dataloader else 0
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        pl_module.log("train_images_per_second", images / elapsed, on_epoch=True)


class EpochLog(L.Callback):
    """One log line per epoch with its metrics and time, so a run in the background (no terminal,
    no progress bar) shows its progress in its log file."""

    KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_seconds", "train_images_per_second")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        parts = [f"{key} {float(metrics[key]):.4g}" for key in self.KEYS if key in metrics]
        log.info("epoch %d/%d: %s", trainer.current_epoch + 1, trainer.max_epochs, ", ".join(parts))
