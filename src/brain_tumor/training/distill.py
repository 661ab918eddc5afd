"""Knowledge distillation: one network trained towards the averaged answers of several teachers
(an ensemble), so that one forward pass gives what the ensemble's several do (Hinton et al. 2015).

Each training slice's target mixes its label with the teachers' probabilities:
``(1 - weight) * one_hot(label) + weight * mean_t softmax(logits_t / temperature)``. The teachers
answer each slice once, unaugmented, before training (offline distillation: on these CPUs a
teacher forward pass per augmented batch would double the training time). In a cross-validation
``{fold}`` in a teacher's path is the fold's number, so that fold K's student learns only from
teachers that never saw fold K's patients.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from brain_tumor.inference import Predictor
from brain_tumor.model.backbone import Preprocessing

log = logging.getLogger(__name__)


def teacher_paths(spec: str, fold: int | None = None) -> list[str]:
    """``"a.pt,b/fold-{fold}/model.pt"`` -> the teachers' checkpoints (``{fold}`` filled in)."""
    paths = [p.strip() for p in spec.split(",") if p.strip()]
    if any("{fold}" in p for p in paths):
        if fold is None:
            raise ValueError("train.teachers names {fold}, which only a cross-validation fills in")
        paths = [p.replace("{fold}", str(fold)) for p in paths]
    return paths


def teacher_probabilities(teachers: Sequence[str], images: torch.Tensor, positions: list[int],
                          student: Preprocessing, temperature: float) -> torch.Tensor:
    """``[N, C]`` mean of the teachers' ``softmax(logits / temperature)`` on ``images[positions]``
    (rows of other positions are zero). Teachers must read the student's size and pipeline."""
    total: torch.Tensor | None = None
    for path in teachers:
        teacher = Predictor.from_checkpoint(path)
        pre = teacher.preprocessing
        if (pre.image_size, pre.pipeline) != (student.image_size, student.pipeline):
            raise ValueError(f"teacher {path} reads {pre.image_size} px ({pre.pipeline}), the student "
                             f"{student.image_size} px ({student.pipeline}): distil between models of one input")
        log.info("teacher %s answers %d training slices", path, len(positions))
        logits = torch.from_numpy(teacher.logits_for(images[positions], progress=True))
        probs = (logits / temperature).softmax(1)
        total = probs if total is None else total + probs
    assert total is not None, "no teacher"
    out = torch.zeros(len(images), total.shape[1])
    out[positions] = total / len(teachers)
    return out
