"""Typed configuration: one frozen dataclass per concern, loaded from YAML/JSON, overridden by
``section.key=value`` strings, validated, and saved into every run directory."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from brain_tumor import atomic
from brain_tumor.data.preprocess import PIPELINES
from brain_tumor.hardware import choose_precision, normalise_precision
from brain_tumor.homes import CHECKOUT_SHARED, default_data_root, default_weights_path

# the team's shared folder (tests and CI read it when present); users' defaults come from
# brain_tumor.homes: the settings, $BRAIN_TUMOR_DATA/_WEIGHTS/_HOME, the shared folder when in use,
# else ~/.cache/brain-tumor
SHARED = Path(os.environ.get("BRAIN_TUMOR_SHARED") or CHECKOUT_SHARED)


OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("plateau", "cosine")


@dataclass(frozen=True)
class DataConfig:
    """Where the slices are and how they are split and fed."""

    root: str = field(default_factory=default_data_root)
    image_size: int = 224
    split: str = "paper"
    val_fraction: float = 0.1
    seed: int = 42
    batch_size: int = 32
    num_workers: int = 0
    augmentation: str = "paper"
    preprocessing: str = "paper"
    oversample: bool = False
    cache_dir: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """Which network and weights, and how much of it is frozen (in Keras layers)."""

    weights: str = "keras"
    weights_path: str | None = field(default_factory=default_weights_path)  # .h5, TF.js folder or weights home
    freeze_layers: int = 30
    bn_momentum: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation: the paper's Adam + cross-entropy + ReduceLROnPlateau + early stopping by
    default; AdamW, warm-up + cosine, label smoothing and MixUp/CutMix as recipe options."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam (weight decay as L2, the paper) | adamw (decoupled weight decay)
    schedule: str = "plateau"  # plateau (ReduceLROnPlateau on val loss) | cosine (to 0 at max_epochs)
    warmup_epochs: int = 0  # linear warm-up from lr/10, per step, before the schedule (cosine only)
    label_smoothing: float = 0.0  # training loss only; validation loss (checkpoint choice) stays plain
    mixup_alpha: float = 0.0  # > 0: each training batch mixed by MixUp or CutMix (one at random), Beta(alpha, alpha)
    max_epochs: int = 8
    plateau_factor: float = 0.2
    plateau_patience: int = 1
    early_stop_patience: int = 3
    class_weighted_loss: bool = False
    seed: int = 42
    precision: str = "auto"  # bf16 where the hardware makes it fast, else fp32 (brain_tumor.precision)
    ema_decay: float | None = None  # e.g. 0.99: validate, select and export an EMA of the weights
    # share of training slices whose tumour box is erased, target "no class" (uniform); as many get a
    # same-size box erased away from the tumour, label kept (brain_tumor.data.counterfactual)
    counterfactual: float = 0.0
    # share of training slices (with a tumour box) shown in another training slice's context, whose own
    # tumour is erased; label kept (brain_tumor.data.context_mix)
    context_mix: float = 0.0
    # weight of the context penalty: the cross-entropy to uniform of what the feature map outside the
    # tumour's grown box alone says of the classes (brain_tumor.training.losses.context_evidence_penalty)
    context_penalty: float = 0.0
    # weight of the tumour map's loss: a head on the third stage learns, cell by cell, where the tumour's box
    # is (erased slices of train.counterfactual: nowhere); the slice's strongest cell is its tumour evidence,
    # and a slice without any is answered "no tumour" (brain_tumor.model.backbone.add_tumour_map)
    tumour_map: float = 0.0
    # knowledge distillation (brain_tumor.training.distill): teachers' checkpoints, comma-separated; in a CV
    # "{fold}" is the fold's number. Each training target: (1 - weight) * label + weight * teachers' mean
    teachers: str | None = None
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    channels_last: bool = True
    threads: int | None = None  # intra-op threads; default one per usable core
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"  # "ddp" for several GPUs/nodes (Lightning); "ddp_spawn" for CPU processes
    num_nodes: int = 1


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> RunConfig:
        """Raise ``ValueError`` on settings that cannot work."""
        if self.model.weights not in ("keras", "torchvision", "none"):
            raise ValueError(f"model.weights: unknown {self.model.weights!r}")
        if not 0 <= self.model.freeze_layers <= 175:
            raise ValueError("model.freeze_layers must be in 0..175 (Keras layers)")
        if not 0 < self.data.val_fraction < 0.5:
            raise ValueError("data.val_fraction must be in (0, 0.5)")
        if self.data.preprocessing not in PIPELINES:
            raise ValueError(f"data.preprocessing: unknown {self.data.preprocessing!r} ({' | '.join(PIPELINES)})")
        if self.data.image_size < 32:
            raise ValueError("data.image_size must be at least 32")
        if self.train.ema_decay is not None and not 0 < self.train.ema_decay < 1:
            raise ValueError("train.ema_decay must be in (0, 1) or none")
        if not 0 <= self.train.counterfactual <= 0.5:
            raise ValueError("train.counterfactual must be in [0, 0.5] (a share of the training slices)")
        if self.train.teachers:
            if not 0 < self.train.distill_weight <= 1 or self.train.distill_temperature <= 0:
                raise ValueError("train.distill_weight must be in (0, 1] and train.distill_temperature > 0")
            if self.train.mixup_alpha > 0 or self.train.counterfactual > 0 or self.train.context_mix > 0:
                raise ValueError("train.teachers cannot be combined with train.mixup_alpha, train.counterfactual or "
                                 "train.context_mix (the teachers answer the slices as they are)")
            if self.train.label_smoothing > 0 or self.train.class_weighted_loss:
                raise ValueError("train.teachers cannot be combined with train.label_smoothing (its targets are "
                                 "soft already) or train.class_weighted_loss")
        if not 0 <= self.train.context_mix < 1:
            raise ValueError("train.context_mix must be in [0, 1) (a share of the training slices)")
        if self.train.context_mix > 0 and self.data.preprocessing != "paper":
            raise ValueError("train.context_mix needs data.preprocessing=paper (the other pipelines crop and pad, "
                             "which moves the tumour boxes)")
        for name, weight in (("context_penalty", self.train.context_penalty), ("tumour_map", self.train.tumour_map)):
            if weight < 0:
                raise ValueError(f"train.{name} must be >= 0 (0: off)")
            if weight > 0 and self.data.preprocessing != "paper":
                raise ValueError(f"train.{name} needs data.preprocessing=paper (the other pipelines crop and pad, "
                                 "which moves the tumour boxes)")
            if weight > 0 and self.train.mixup_alpha > 0:
                raise ValueError(f"train.{name} cannot be combined with train.mixup_alpha (a mixed slice has two "
                                 "tumours and one mask)")
        if self.train.counterfactual > 0 and self.data.preprocessing != "paper":
            raise ValueError("train.counterfactual needs data.preprocessing=paper (the other pipelines crop and pad, "
                             "which moves the tumour boxes)")
        normalise_precision(self.train.precision)
        if self.train.threads is not None and self.train.threads < 1:
            raise ValueError("train.threads must be >= 1 or none")
        if self.train.optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer: unknown {self.train.optimizer!r} ({' | '.join(OPTIMIZERS)})")
        if self.train.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule: unknown {self.train.schedule!r} ({' | '.join(SCHEDULES)})")
        if self.train.warmup_epochs and self.train.schedule != "cosine":
            raise ValueError("train.warmup_epochs needs train.schedule=cosine")
        if not 0 <= self.train.warmup_epochs < self.train.max_epochs:
            raise ValueError("train.warmup_epochs must be in 0..max_epochs-1")
        if not 0 <= self.train.label_smoothing < 1:
            raise ValueError("train.label_smoothing must be in [0, 1)")
        if self.train.mixup_alpha < 0:
            raise ValueError("train.mixup_alpha must be >= 0 (0: off)")
        if self.train.mixup_alpha > 0 and self.train.counterfactual > 0:
            raise ValueError("train.counterfactual cannot be combined with train.mixup_alpha "
                             "(an erased slice has no label to mix)")
        if self.train.mixup_alpha > 0 and self.train.class_weighted_loss:
            raise ValueError("train.mixup_alpha cannot be combined with train.class_weighted_loss (with mixed targets "
                             "the weighted loss is scaled differently from batch to batch)")
        if self.train.lr <= 0 or self.train.max_epochs < 1:
            raise ValueError("train.lr must be > 0 and train.max_epochs >= 1")
        return self


def resolve_precision_setting(config: RunConfig) -> RunConfig:
    """``train.precision`` made concrete for this machine (``auto`` -> bf16-mixed or 32-true), so a
    run's saved config says what it trained at; the reason goes into its environment.json."""
    choice = choose_precision(config.train.precision, config.train.accelerator)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, precision=choice.precision))


def _coerce(value: str, current: Any, optional: bool) -> Any:
    if optional and value.lower() in ("none", "null"):
        return None
    if isinstance(current, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    try:
        return json.loads(value) if current is None else value
    except json.JSONDecodeError:
        return value


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``section.key=value`` overrides, e.g. ``train.lr=3e-4``."""
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        section_name, name = key.split(".", 1)
        section = getattr(config, section_name, None)
        if section is None or not hasattr(section, name):
            raise ValueError(f"override {item!r}: no setting {key}")
        optional = "None" in str({f.name: f.type for f in dataclasses.fields(section)}[name])
        section = dataclasses.replace(section, **{name: _coerce(value, getattr(section, name), optional)})
        config = dataclasses.replace(config, **{section_name: section})
    return config.validate()


def from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build a config from nested dicts, rejecting unknown keys."""
    sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
    unknown = set(raw) - set(sections)
    if unknown:
        raise ValueError(f"unknown config sections {sorted(unknown)}")
    return RunConfig(**{k: cls(**raw.get(k, {})) for k, cls in sections.items()}).validate()


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then a YAML/JSON file, then overrides."""
    config = RunConfig()
    if path is not None:
        config = from_dict(yaml.safe_load(Path(path).read_text()) or {})
    return apply_overrides(config, overrides or [])


def to_dict(config: RunConfig) -> dict[str, Any]:
    """Plain nested dict of a config."""
    return dataclasses.asdict(config)


PATH_SETTINGS = (("data", "root"), ("data", "cache_dir"), ("model", "weights_path"))
# settings that say where and how fast a run ran, or which draw of a recipe it is, not the recipe
NOT_RECIPE = frozenset({"data.root", "data.cache_dir", "data.num_workers", "data.seed", "model.weights_path",
                        "train.seed", "train.precision", "train.threads", "train.accelerator", "train.devices",
                        "train.strategy", "train.num_nodes", "train.channels_last"})


def recipe_fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that make a recipe (``section.key`` -> value, defaults filled in): two models
    with the same fingerprint are draws of one recipe, whatever machine or seed they came from."""
    defaults = to_dict(RunConfig())
    out: dict[str, Any] = {}
    for section, values in defaults.items():
        given = config.get(section) or {}
        for key, default in values.items():
            if f"{section}.{key}" not in NOT_RECIPE:
                out[f"{section}.{key}"] = given.get(key, default)
    return out


def portable_path(path: str | Path, base: Path | None = None) -> str:
    """``path`` relative to ``base`` (default the working directory), as results record files, so
    that they name no machine's folders."""
    return os.path.relpath(Path(path).resolve(), (base or Path.cwd()).resolve())


def portable(config: dict[str, Any], base: Path | None = None) -> dict[str, Any]:
    """The config with its file paths relative to ``base`` (the working directory the command ran
    in, e.g. the repository root), so a committed config names no machine's folders."""
    base = (base or Path.cwd()).resolve()
    out = {section: dict(values) for section, values in config.items()}
    for section, key in PATH_SETTINGS:
        value = out.get(section, {}).get(key)
        if isinstance(value, str) and os.path.isabs(value):
            out[section][key] = portable_path(value, base)
    return out


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The ``config.yaml`` a run (or CV) folder was written with, as a plain dict ({} if empty)."""
    loaded = yaml.safe_load((run_dir / "config.yaml").read_text())
    return loaded if isinstance(loaded, dict) else {}


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write a config as YAML (atomically), paths relative to the working directory."""
    atomic.write_text(path, yaml.safe_dump(portable(to_dict(config)), sort_keys=False))
