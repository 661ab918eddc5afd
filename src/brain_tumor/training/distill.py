"""Knowledge distillation: one network trained towards the averaged answers of several teachers
(an ensemble), so that one forward pass gives what the ensemble's several do.

Each training slice's target mixes its label with the teachers' tempered probabilities:
``(1 - weight) * one_hot(label) + weight * mean_t softmax(logits_t / temperature)``, and the
student is trained on it with plain cross-entropy at temperature 1 (soft-target training; not
Hinton et al.'s loss, which also tempers the student and scales by T**2). The teachers
answer each slice once, unaugmented, before training (offline distillation: on these CPUs a
teacher forward pass per augmented batch would double the training time). In a cross-validation
``{fold}`` in a teacher's path is the fold's number, so that fold K's student learns only from
teachers that never saw fold K's patients.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from brain_tumor.inference import Predictor
from brain_tumor.model.backbone import Preprocessing
from brain_tumor.training.checkpoint import read_checkpoint_meta

log = logging.getLogger(__name__)


def teacher_paths(spec: str, fold: int | None = None) -> list[str]:
    """``"a.pt,b/fold-{fold}/model.pt"`` -> the teachers' checkpoints (``{fold}`` filled in). In a
    cross-validation (``fold`` given) every teacher must name ``{fold}``: one model for all folds
    would have seen most folds' patients."""
    paths = [p.strip() for p in spec.split(",") if p.strip()]
    if fold is not None and not all("{fold}" in p for p in paths):
        raise ValueError("in a cross-validation every path in train.teachers must name {fold} (fold K's teacher "
                         "must be a fold-K model, trained without fold K's patients)")
    if any("{fold}" in p for p in paths):
        if fold is None:
            raise ValueError("train.teachers names {fold}, which only a cross-validation fills in")
        paths = [p.replace("{fold}", str(fold)) for p in paths]
    return paths


def check_teacher(teacher: Predictor, path: str, meta: dict[str, Any], student: Preprocessing,
                  class_names: list[str], split: dict[str, str]) -> None:
    """Refuse a teacher that reads another input, names other classes, or was held out on other
    slices than the student (its checkpoint's split record); warn where it records no split."""
    pre = teacher.preprocessing
    if (pre.image_size, pre.pipeline) != (student.image_size, student.pipeline):
        raise ValueError(f"teacher {path} reads {pre.image_size} px ({pre.pipeline}), the student "
                         f"{student.image_size} px ({student.pipeline}): distil between models of one input")
    if list(teacher.class_names) != list(class_names):
        raise ValueError(f"teacher {path} names classes {teacher.class_names}, the student {class_names}")
    recorded = meta.get("split")
    if recorded is None:
        log.warning("teacher %s records no split (trained before checkpoints did): cannot check that it never saw "
                    "this run's held-out slices", path)
    elif recorded.get("test_indices_sha256") != split["test_indices_sha256"]:
        raise ValueError(f"teacher {path} was held out on other slices ({recorded.get('name')}) than this run "
                         f"({split['name']}): it may have seen this run's test patients")


def teacher_probabilities(teachers: Sequence[str], images: torch.Tensor, positions: list[int],
                          student: Preprocessing, temperature: float, class_names: list[str],
                          split: dict[str, str]) -> torch.Tensor:
    """``[N, C]`` mean of the teachers' ``softmax(logits / temperature)`` on ``images[positions]``
    (rows of other positions are zero), each teacher checked by :func:`check_teacher`."""
    total: torch.Tensor | None = None
    for path in teachers:
        teacher = Predictor.from_checkpoint(path)
        check_teacher(teacher, path, read_checkpoint_meta(path), student, class_names, split)
        log.info("teacher %s answers %d training slices", path, len(positions))
        logits = torch.from_numpy(teacher.logits_for(images[positions], progress=True))
        probs = (logits / temperature).softmax(1)
        total = probs if total is None else total + probs
    assert total is not None, "no teacher"
    out = torch.zeros(len(images), total.shape[1])
    out[positions] = total / len(teachers)
    return out
