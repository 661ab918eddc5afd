"""``run.json``: what a finished run is, in a small file that reports can read instead of
parsing folder names: its kind, recipe, seed, data, code and checkpoint."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from brain_tumor.config import RunConfig
from brain_tumor.data.splits import indices_sha256
from brain_tumor.onnx_runtime import file_sha256

RUN_FORMAT = "brain-tumor-run/1"
KINDS = ("paper-split scenario", "cv fold", "train", "benchmark")


def run_record(config: RunConfig, kind: str, split_name: str, split: dict[str, list[int]], checkpoint: Path,
               metrics: dict[str, Any], environment: dict[str, Any]) -> dict[str, Any]:
    """The contents of ``run.json``; paths are relative (a folder name for the data, a file name
    for the checkpoint), so the record names no machine's folders."""
    if kind not in KINDS:
        raise ValueError(f"unknown run kind {kind!r} ({', '.join(KINDS)})")
    data, model, train = config.data, config.model, config.train
    return {
        "format": RUN_FORMAT, "kind": kind, "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "recipe": {"image_size": data.image_size, "preprocessing": data.preprocessing,
                   "augmentation": data.augmentation, "weights": model.weights, "freeze_layers": model.freeze_layers,
                   "max_epochs": train.max_epochs, "precision": train.precision, "lr": train.lr,
                   "weight_decay": train.weight_decay, "optimizer": train.optimizer, "schedule": train.schedule,
                   "warmup_epochs": train.warmup_epochs,
                   "label_smoothing": train.label_smoothing, "mixup_alpha": train.mixup_alpha,
                   "counterfactual": train.counterfactual, "context_mix": train.context_mix,
                   "teachers": train.teachers, "distill_weight": train.distill_weight,
                   "distill_temperature": train.distill_temperature,
                   "ema_decay": train.ema_decay},
        "seed": train.seed,
        "data": {"dataset": Path(data.root).name, "split": split_name,
                 **{f"n_{part}": len(idx) for part, idx in split.items()},
                 "test_indices_sha256": indices_sha256(split.get("test", []))},
        "code": {"git_commit": environment.get("git_commit"), "packages": environment.get("packages")},
        "checkpoint": {"file": checkpoint.name, "sha256": file_sha256(checkpoint) if checkpoint.is_file() else None},
        "result": {"accuracy": metrics.get("accuracy"), "macro_f1": metrics.get("macro_f1"),
                   "epochs": metrics.get("epochs"), "best_epoch": metrics.get("best_epoch")},
    }
