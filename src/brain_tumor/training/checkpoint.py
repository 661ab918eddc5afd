"""Self-describing checkpoints: weights plus everything needed to rebuild and use the model."""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import ResNet, resnet50

from brain_tumor.atomic import atomic_path
from brain_tumor.model.backbone import TUMOUR_MAP, Preprocessing, add_tumour_map, make_resnet50_v1
from brain_tumor.package import PackageError, is_package, read_package, resolve_reference

FORMAT = "brain-tumor-checkpoint/1"
log = logging.getLogger(__name__)


def build_network(architecture: str, num_classes: int, tumour_map: bool = False) -> ResNet:
    """An untrained network of the named architecture with a ``num_classes`` head (and, with
    ``tumour_map``, the head of :func:`brain_tumor.model.add_tumour_map`)."""
    if architecture == "resnet50-v1":
        model = make_resnet50_v1()
    elif architecture == "resnet50-v1.5":
        model = resnet50(weights=None)
    else:
        raise ValueError(f"unknown architecture {architecture!r}")
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return add_tumour_map(model) if tumour_map else model


def architecture_for(weights: str) -> str:
    """Keras weights (and random init) use Keras' v1 layout; torchvision's use v1.5."""
    return "resnet50-v1.5" if weights == "torchvision" else "resnet50-v1"


def save_model_checkpoint(path: str | Path, network: nn.Module, *, architecture: str,
                          class_names: list[str], preprocessing: Preprocessing,
                          config: dict[str, Any], epoch: int, metrics: dict[str, float],
                          split: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Atomically write a checkpoint loadable with ``torch.load(weights_only=True)``; ``split``
    (its name and ``test_indices_sha256``) says which slices the model never saw; ``extra``: more
    self-description (plain data), e.g. the tumour-evidence threshold."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    core = {"format", "state_dict", "architecture", "class_names", "preprocessing", "bn_eps", "config", "epoch",
            "metrics", "split"}
    if clash := core & set(extra or {}):
        raise ValueError(f"extra self-description cannot replace {sorted(clash)}")
    payload = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()},
        "architecture": architecture,
        "class_names": list(class_names),
        "preprocessing": {"mean": list(preprocessing.mean), "std": list(preprocessing.std),
                          "image_size": preprocessing.image_size, "pipeline": preprocessing.pipeline},
        "bn_eps": [m.eps for m in network.modules() if isinstance(m, nn.BatchNorm2d)][0],
        "config": config,
        "epoch": epoch,
        "metrics": metrics,
        **({"split": dict(split)} if split else {}),
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file."""


@dataclass(frozen=True)
class Checkpoint:
    """A model as a checkpoint (or package) describes it: what every command reads, loaded once.

    ``meta`` is the self-description (everything but the weights) as a plain dict, for the
    writers of reports and packages; the typed fields are what code decides on."""

    source: str
    architecture: str
    class_names: list[str]
    preprocessing: Preprocessing
    bn_eps: float
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    config: dict[str, Any] | None = None  # the training recipe
    calibration: dict[str, Any] | None = None  # legacy: temperature/refer_threshold stored inside
    ood: dict[str, Any] | None = None  # the OOD detector (beside the checkpoint, or legacy inside)
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    def build(self) -> nn.Module:
        """The network with these weights (its own copy), in eval mode. Built on the meta device and
        given the weights: the random initialisation they would replace cost 0.14 s of every load
        on a 2-core Xeon, seconds beside other jobs (results/bench/model-loading-*)."""
        with torch.device("meta"):
            network = build_network(self.architecture, len(self.class_names),
                                    tumour_map=f"{TUMOUR_MAP}.weight" in self.state_dict)
        for m in network.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = self.bn_eps
        # strict: a missing weight raises; floating tensors in fp32, as copying into a built network did
        network.load_state_dict({k: v.to(torch.float32, copy=True) if v.is_floating_point() else v.clone()
                                 for k, v in self.state_dict.items()}, assign=True)
        built: nn.Module = network.eval()
        return built


def load_checkpoint(path: str | Path) -> Checkpoint:
    """The one loader: a checkpoint file, a model package folder or ``hf://owner/name`` as a
    :class:`Checkpoint`. A file unchanged since it was last read in this process (same path, size
    and modification time) is not read again, so a command that checks, describes and then loads
    a model reads it once."""
    resolved = Path(path)
    try:
        stat = resolved.stat()
    except OSError:  # a hub reference or a missing file: read_checkpoint says what is wrong
        return _to_checkpoint(read_checkpoint(path), str(path))
    if resolved.is_dir():
        return _to_checkpoint(read_checkpoint(path), str(path))
    companion = resolved.parent / OOD_COMPANION  # read with it: a detector written later is a new version
    version = (stat.st_size, stat.st_mtime_ns,
               companion.stat().st_mtime_ns if companion.is_file() else None)
    return _cached(str(resolved.resolve()), version, str(path))


@lru_cache(maxsize=2)
def _cached(resolved: str, version: tuple[int, int, int | None], source: str) -> Checkpoint:
    return _to_checkpoint(read_checkpoint(source), source)  # errors name the file as the user gave it


def _to_checkpoint(payload: dict[str, Any], source: str) -> Checkpoint:
    pre = payload["preprocessing"]
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return Checkpoint(source=source, architecture=payload["architecture"], class_names=list(payload["class_names"]),
                      preprocessing=Preprocessing(tuple(pre["mean"]), tuple(pre["std"]), pre["image_size"],
                                                  pre.get("pipeline", "paper")),
                      bn_eps=float(payload["bn_eps"]), state_dict=payload["state_dict"], config=payload.get("config"),
                      calibration=payload.get("calibration"), ood=payload.get("ood"), meta=meta)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The payload of a model checkpoint, read weights-only (tensors, numbers, strings and
    containers of them: a file that holds anything else is refused, since unpickling it could
    run code). ``path`` may also be a model package folder or ``hf://owner/name`` (see
    :mod:`brain_tumor.package`). Every failure is a :class:`CheckpointError` with one line.
    Commands use :func:`load_checkpoint`, which calls this once per file."""
    try:
        path = resolve_reference(path)
        if is_package(path):
            payload = {**read_package(path), "format": FORMAT}
            check_description(payload, path)
            return payload
    except PackageError as exc:
        raise CheckpointError(str(exc)) from exc
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint or model package")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused, it holds objects other than tensors and plain data "
                              "(loading it could run code)") from exc
    except Exception as exc:  # noqa: BLE001  (zip, pickle and torch errors of a damaged file)
        raise CheckpointError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0] if str(exc) else exc})") \
            from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a brain-tumor checkpoint")
    check_description(payload, path)
    if payload.get("ood") is None:  # checkpoints written before the detector moved beside them hold it inside
        payload["ood"] = read_ood_companion(path)
    return payload


def check_description(payload: dict[str, Any], source: str | Path) -> None:
    """Refuse, in one line, a checkpoint whose self-description cannot work (a hand-edited or
    foreign file): before it reaches the resize, the network builder or the normaliser."""
    from brain_tumor.data.preprocess import PIPELINES

    pre = payload.get("preprocessing")
    names = payload.get("class_names")
    problems = []
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        problems.append("class_names must be a non-empty list of names")
    if not isinstance(pre, dict):
        problems.append("no preprocessing")
    else:
        size = pre.get("image_size")
        if not isinstance(size, int) or isinstance(size, bool) or not 32 <= size <= 2048:
            problems.append(f"preprocessing.image_size {size!r} is not an integer in 32..2048")
        for key in ("mean", "std"):
            values = pre.get(key)
            if not (isinstance(values, list | tuple) and len(values) == 3
                    and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)):
                problems.append(f"preprocessing.{key} must be 3 numbers")
        if any(isinstance(v, int | float) and v <= 0 for v in pre.get("std") or []):
            problems.append("preprocessing.std must be positive")
        if pre.get("pipeline", "paper") not in PIPELINES:
            problems.append(f"preprocessing.pipeline {pre.get('pipeline')!r} is unknown")
    if problems:
        raise CheckpointError(f"{source}: unusable model description: {'; '.join(problems)}")


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's self-description (everything but the weights), as a dict of its own."""
    return dict(load_checkpoint(path).meta)


def load_model_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network from a checkpoint alone; returns ``(network in eval mode, metadata)``."""
    checkpoint = load_checkpoint(path)
    return checkpoint.build(), dict(checkpoint.meta)


OOD_COMPANION = "ood_bank.safetensors"
OOD_FORMAT = "brain-tumor-ood/1"


def write_ood_companion(checkpoint: str | Path, bank: torch.Tensor, *, method: str, k: int, threshold: float,
                        flag_rate: float, fitted_on: str) -> Path:
    """Store an OOD detector beside a checkpoint (``ood_bank.safetensors``: the bank, and its
    settings and the checkpoint's SHA-256 as metadata); the checkpoint itself is never rewritten,
    so its hash, and every file matched to it (ONNX exports, gate, shortcut figures), stays valid.
    ``threshold`` flags ``flag_rate`` of the in-distribution slices named by ``fitted_on``."""
    from safetensors.torch import save_file

    from brain_tumor.onnx_runtime import file_sha256

    path = Path(checkpoint)
    if path.is_dir():
        raise CheckpointError(f"{path}: a model package is read-only; run this on its checkpoint and export again")
    metadata = {"format": OOD_FORMAT, "model_sha256": file_sha256(path), "method": method, "k": str(k),
                "threshold": repr(float(threshold)), "flag_rate": repr(float(flag_rate)), "fitted_on": fitted_on}
    target = path.parent / OOD_COMPANION
    with atomic_path(target, suffix=".safetensors") as tmp:
        save_file({"bank": bank.detach().cpu().contiguous()}, str(tmp), metadata=metadata)
    return target


def read_ood_companion(checkpoint: Path) -> dict[str, Any] | None:
    """The OOD detector stored beside ``checkpoint`` for exactly this file, or None (absent, or
    fitted on another checkpoint: then ignored with a warning)."""
    from safetensors import safe_open

    from brain_tumor.onnx_runtime import file_sha256

    path = checkpoint.parent / OOD_COMPANION
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta, bank = f.metadata() or {}, f.get_tensor("bank")
        if meta.get("format") != OOD_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        ood = {"method": meta["method"], "bank": bank, "k": int(meta["k"]), "threshold": float(meta["threshold"]),
               "flag_rate": float(meta.get("flag_rate", meta.get("flag_rate_on_val", "nan"))),  # the older key
               "fitted_on": meta.get("fitted_on", "validation slices")}
    except Exception as exc:  # noqa: BLE001  (safetensors raises its own types)
        log.warning("%s: unreadable OOD detector, ignored (%s)", path, str(exc).splitlines()[0] if str(exc) else exc)
        return None
    if meta.get("model_sha256") != file_sha256(checkpoint):
        log.warning("%s: fitted on another checkpoint than %s, ignored", path, checkpoint.name)
        return None
    return ood
