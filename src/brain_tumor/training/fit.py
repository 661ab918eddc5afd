"""One training run: data -> model -> Lightning fit -> best self-describing checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from brain_tumor.config import RunConfig, resolve_precision_setting, to_dict
from brain_tumor.data.cache import cached_images
from brain_tumor.data.datamodule import SliceDataModule
from brain_tumor.data.manifest import CLASS_NAMES, Record, load_records
from brain_tumor.data.splits import Split, indices_sha256, load_or_make_paper_split
from brain_tumor.hardware import apply_threads, resolve_threads
from brain_tumor.model import (
    FreezeReport,
    add_tumour_map,
    build_classifier,
    freeze_first_keras_layers,
    has_tumour_map,
    preprocessing_for,
)
from brain_tumor.training.callbacks import EpochLog, EpochTimer
from brain_tumor.training.checkpoint import CheckpointError, architecture_for, save_model_checkpoint
from brain_tumor.training.distill import teacher_paths, teacher_probabilities
from brain_tumor.training.module import SliceClassifier
from brain_tumor.transforms import train_preset
from brain_tumor.tumour_evidence import evidence_record

log = logging.getLogger(__name__)


def split_record(split: Split) -> dict[str, str]:
    """What a checkpoint records of its split: the name and the held-out slices' fingerprint."""
    return {"name": split.name, "test_indices_sha256": indices_sha256(split.test)}


@dataclass
class PreparedData:
    """Decoded images of the readable records, their labels, and the split over them (``fold``:
    its number in a cross-validation, which fills ``{fold}`` in ``train.teachers``)."""

    records: list[Record]
    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    split: Split
    fold: int | None = None


@dataclass(frozen=True)
class FitResult:
    """Where the best model is and what training cost."""

    checkpoint: Path
    freeze: FreezeReport
    epochs: int
    best_epoch: int
    global_zero: bool = True  # False in the other processes of a multi-process (DDP) run


def load_data(root: str, image_size: int, cache_dir: str | None,
              pipeline: str = "paper") -> tuple[list[Record], torch.Tensor, torch.Tensor]:
    """Records, decoded uint8 images and integer labels (unreadable files reported and dropped)."""
    records = load_records(root)
    images, kept = cached_images(records, image_size, cache_dir, pipeline)
    records = [records[i] for i in kept]
    labels = torch.tensor([CLASS_NAMES.index(r.label) for r in records])
    return records, images, labels


def prepare_data(config: RunConfig, split_path: Path) -> PreparedData:
    """Load the data and the paper split (made once, saved at ``split_path`` and reused)."""
    records, images, labels = load_data(config.data.root, config.data.image_size, config.data.cache_dir,
                                        config.data.preprocessing)
    split = load_or_make_paper_split(split_path, [r.label for r in records], config.data.seed,
                                     config.data.val_fraction)
    return PreparedData(records, images, labels, list(CLASS_NAMES), split)


def build_module(config: RunConfig, class_names: list[str],
                 train_labels: torch.Tensor) -> tuple[SliceClassifier, FreezeReport]:
    """The classifier with its first ``freeze_layers`` Keras layers frozen."""
    network = build_classifier(config.model.weights, len(class_names), config.model.weights_path,
                               config.model.bn_momentum)
    report = freeze_first_keras_layers(network, config.model.freeze_layers)
    if config.train.tumour_map > 0:
        add_tumour_map(network)  # after freezing: the new head always trains
    weights = None
    if config.train.class_weighted_loss:
        counts = torch.bincount(train_labels, minlength=len(class_names)).float()
        weights = counts.sum() / (len(class_names) * counts)
    preprocessing = preprocessing_for(config.model.weights, config.data.image_size, config.data.preprocessing)
    module = SliceClassifier(network, preprocessing,
                             lr=config.train.lr, weight_decay=config.train.weight_decay,
                             plateau_factor=config.train.plateau_factor,
                             plateau_patience=config.train.plateau_patience,
                             class_weights=weights, channels_last=config.train.channels_last,
                             optimizer=config.train.optimizer, schedule=config.train.schedule,
                             warmup_epochs=config.train.warmup_epochs,
                             label_smoothing=config.train.label_smoothing, mixup_alpha=config.train.mixup_alpha,
                             num_classes=len(class_names), context_penalty=config.train.context_penalty,
                             tumour_map=config.train.tumour_map)
    return module, report


def check_resumable(last: Path) -> None:
    """Refuse, in one line, a resume checkpoint that cannot be read weights-only (a planted or
    damaged file), before Lightning touches it."""
    try:
        torch.load(last, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (unpickling, zip and torch errors alike)
        raise CheckpointError(f"{last}: cannot resume from it, it is damaged or holds objects other than tensors "
                              "and plain data (loading it could run code); delete it to start afresh") from exc


def keep_log_before_resume(log_dir: Path) -> Path | None:
    """Move an interrupted run's ``metrics.csv`` aside before Lightning's CSV logger deletes it on
    resume; :func:`brain_tumor.evaluation.run_eval.read_history` reads the parts back in order."""
    current = log_dir / "metrics.csv"
    if not current.is_file():
        return None
    n = len(list(log_dir.glob("metrics-before-resume-*.csv"))) + 1
    kept = log_dir / f"metrics-before-resume-{n}.csv"
    current.replace(kept)
    return kept


def make_trainer(config: RunConfig, run_dir: Path, work_dir: Path,
                 extra_callbacks: Sequence[L.Callback] = ()) -> tuple[L.Trainer, ModelCheckpoint]:
    """Trainer with checkpointing, early stopping, LR monitor, epoch timing, CSV + TensorBoard.

    With ``train.ema_decay``, an exponential moving average of the weights (and BatchNorm
    statistics) is updated after every step; validation, early stopping, the best checkpoint and
    so the exported model all use the average."""
    best = ModelCheckpoint(dirpath=work_dir, filename="best", monitor="val_loss", mode="min",
                           enable_version_counter=False)
    # every epoch's end, overwritten: what a resume starts from. (save_last=True on ``best`` only
    # copies it when the best improves, so a resume would repeat every epoch since the best.)
    latest = ModelCheckpoint(dirpath=work_dir, filename="last", monitor=None, save_top_k=1,
                             enable_version_counter=False)
    callbacks = [best, latest, EarlyStopping("val_loss", patience=config.train.early_stop_patience),
                 LearningRateMonitor("epoch"), EpochTimer(), EpochLog(), *extra_callbacks]
    if config.train.ema_decay is not None:
        callbacks.append(EMAWeightAveraging(decay=config.train.ema_decay))
    loggers = [CSVLogger(run_dir, name="logs", version=""),
               TensorBoardLogger(work_dir, name="tensorboard", version="")]
    trainer = L.Trainer(max_epochs=config.train.max_epochs, accelerator=config.train.accelerator,
                        devices=config.train.devices, precision=config.train.precision,  # type: ignore[arg-type]
                        strategy=config.train.strategy, num_nodes=config.train.num_nodes,
                        callbacks=callbacks, logger=loggers, deterministic=False,
                        log_every_n_steps=10, num_sanity_val_steps=0)
    return trainer, best


def fit(config: RunConfig, data: PreparedData, run_dir: Path, work_dir: Path,
        extra_callbacks: Sequence[L.Callback] = ()) -> FitResult:
    """Train (resuming from ``work_dir/last.ckpt`` if present) and export the best model.

    Multi-GPU / multi-node: ``train.strategy=ddp`` (``devices``, ``num_nodes``); Lightning shards
    the training data across processes; only global rank 0 writes the model."""
    apply_threads(resolve_threads(config.train.threads))
    config = resolve_precision_setting(config)
    L.seed_everything(config.train.seed, workers=True)
    module, report = build_module(config, data.class_names, data.labels[data.split.train])
    soft_targets = None
    if config.train.teachers:
        student = preprocessing_for(config.model.weights, config.data.image_size, config.data.preprocessing)
        teachers = teacher_paths(config.train.teachers, data.fold)
        soft_targets = teacher_probabilities(teachers, data.images, data.split.train, student,
                                             config.train.distill_temperature, data.class_names,
                                             split_record(data.split))
    datamodule = SliceDataModule(data.images, data.labels, data.split, train_preset(config.data.augmentation),
                                 config.data.batch_size, config.data.num_workers,
                                 config.data.oversample, config.train.seed,
                                 boxes=[r.box for r in data.records], counterfactual=config.train.counterfactual,
                                 context_mix=config.train.context_mix, soft_targets=soft_targets,
                                 distill_weight=config.train.distill_weight,
                                 with_masks=config.train.context_penalty > 0 or config.train.tumour_map > 0)
    for name, share in (("counterfactual", config.train.counterfactual), ("context_mix", config.train.context_mix),
                        ("context_penalty", config.train.context_penalty), ("tumour_map", config.train.tumour_map)):
        if share > 0 and not any(data.records[i].box for i in data.split.train):
            raise ValueError(f"train.{name} needs tumour boxes (the manifest's box_* columns); this data has none")
    last = work_dir / "last.ckpt"
    if last.is_file():
        check_resumable(last)
        keep_log_before_resume(run_dir / "logs")
    trainer, best = make_trainer(config, run_dir, work_dir, extra_callbacks)
    # weights_only: a checkpoint planted in a run folder must not run code when training resumes
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None, weights_only=True)
    if not trainer.is_global_zero:
        return FitResult(work_dir / "model.pt", report, trainer.current_epoch, -1, global_zero=False)
    best_path = Path(best.best_model_path) if best.best_model_path else last
    state = torch.load(best_path, map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])
    best_epoch = int(state["epoch"])
    out = save_model_checkpoint(
        work_dir / "model.pt", module.network, architecture=architecture_for(config.model.weights),
        class_names=data.class_names,
        preprocessing=preprocessing_for(config.model.weights, config.data.image_size, config.data.preprocessing),
        config=to_dict(config), epoch=best_epoch,
        metrics={"val_loss": float(best.best_model_score or float("nan"))}, split=split_record(data.split),
        extra=_evidence_extra(module, data))
    return FitResult(out, report, trainer.current_epoch, best_epoch)


def _evidence_extra(module: SliceClassifier, data: PreparedData) -> dict[str, object]:
    """For a network with a tumour map, its tumour-evidence threshold fitted on the inner
    validation slices that hold a tumour (:mod:`brain_tumor.tumour_evidence`); else nothing."""
    if not has_tumour_map(module.network):
        return {}
    val = [i for i in data.split.val if data.records[i].box is not None] or list(data.split.val)
    if not val:  # nothing to fit it on: the map gives no answer (a warning when the model is loaded)
        log.warning("tumour evidence: no validation slice to fit the threshold on; the map will give no answer")
        return {}
    scores = module.slice_evidence(data.images[val]).numpy()
    record = evidence_record(scores)
    log.info("tumour evidence: threshold %.4f (%s)", record["threshold"], record["fitted_on"])
    return {"tumour_evidence": record}
