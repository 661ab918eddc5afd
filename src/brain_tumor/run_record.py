"""``run.json``: what a finished run is, in a small file that reports can read instead of
parsing folder names: its kind, recipe, seed, data, code and checkpoint."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from brain_tumor.config import RunConfig
from brain_tumor.data.splits import indices_sha256
from brain_tumor.onnx_runtime import file_sha256

RUN_FORMAT = "brain-tumor-run/1"
KINDS = ("paper-split scenario", "cv fold", "train", "benchmark")


def run_record(config: RunConfig, kind: str, split_name: str, split: dict[str, list[int]], checkpoint: Path,
               metrics: dict[str, Any], environment: dict[str, Any], fold: int | None = None) -> dict[str, Any]:
    """The contents of ``run.json``; paths are relative (a folder name for the data, a file name
    for the checkpoint), so the record names no machine's folders. ``fold``: the run's fold of a
    cross-validation (1-based), None outside one."""
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
                   "context_penalty": train.context_penalty, "tumour_map": train.tumour_map,
                   "teachers": train.teachers, "distill_weight": train.distill_weight,
                   "distill_temperature": train.distill_temperature,
                   "ema_decay": train.ema_decay},
        "seed": train.seed,
        "data": {"dataset": Path(data.root).name, "split": split_name, "fold": fold,
                 **{f"n_{part}": len(idx) for part, idx in split.items()},
                 "test_indices_sha256": indices_sha256(split.get("test", []))},
        "code": {"git_commit": environment.get("git_commit"), "packages": environment.get("packages")},
        "checkpoint": {"file": checkpoint.name, "sha256": file_sha256(checkpoint) if checkpoint.is_file() else None},
        "result": {"accuracy": metrics.get("accuracy"), "macro_f1": metrics.get("macro_f1"),
                   "epochs": metrics.get("epochs"), "best_epoch": metrics.get("best_epoch")},
    }


def read_run_record(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's ``run.json``; None where it has none (or it is not a run record)."""
    try:
        record = json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == RUN_FORMAT else None


def runs_of_kind(root: Path, kind: str) -> list[Path]:
    """Every finished run folder under ``root`` (at any depth) whose ``run.json`` says ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"unknown run kind {kind!r} ({', '.join(KINDS)})")
    return [p.parent for p in sorted(root.rglob("run.json"))
            if (record := read_run_record(p.parent)) is not None and record["kind"] == kind
            and (p.parent / "metrics.json").is_file()]
