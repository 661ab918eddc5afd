"""Fit and judge the "no tumour" gate of one model, with the collection shortcut measured.

Tumour slices: the Figshare slices of one patient-wise CV fold (the gate learns on the fold's
training patients, is judged on its test patients, whom the model never saw). No-tumour slices:
a collection split by its near-duplicate ``group`` (cross-fitted: every slice judged by a gate
that saw none of its group). The shortcut is measured with the test patients' tumour slices
rendered in other styles (:mod:`brain_tumor.source_style`), each left out of the gate's
training in turn (leave one style out), and with an ablation: the gate fitted without styled tumour
slices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from brain_tumor.batched import embeddings
from brain_tumor.data.counterfactual import erased_copy
from brain_tumor.data.erasing import ERASERS, GROW, Box
from brain_tumor.data.imageio import ImageReadError, read_slice
from brain_tumor.data.preprocess import prepare_slice
from brain_tumor.evaluation import statistics as st
from brain_tumor.gate import TumourGate, fit_gate
from brain_tumor.inference import Predictor
from brain_tumor.source_style import styled

log = logging.getLogger(__name__)


Render = Callable[[int, np.ndarray], np.ndarray | None]  # (item index, image) -> image to score, or None: skip


def features_of(predictor: Predictor, paths: Sequence[str | Path], render: Render,
                desc: str, batch: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features [n, D], tumour-class probabilities [n, K], kept mask [n])``, one row per path:
    each file read, passed through ``render(i, image)`` and the model; an unreadable file is logged
    and masked out, and so is one ``render`` returns None for (e.g. no control region fits for an
    erasure). Masked-out rows are zeros: select with the mask (``features[ok]``)."""
    ok = np.ones(len(paths), dtype=bool)

    def rendered() -> Iterator[np.ndarray]:
        for i, path in enumerate(tqdm(paths, desc=desc, mininterval=10)):
            try:
                image = render(i, read_slice(path))
            except ImageReadError as exc:
                log.warning("skipped: %s", exc)
                image = None
            if image is None:
                ok[i] = False
            else:
                yield image

    features, logits = embeddings(predictor, rendered(), batch)  # reads every path, filling ok
    if not ok.any():
        raise ValueError(f"{desc}: not one of {len(paths)} slices could be scored")
    kept_feats, kept_probs = features.numpy(), (logits / predictor.temperature).softmax(-1).numpy()
    all_feats = np.zeros((len(paths), kept_feats.shape[1]), dtype=kept_feats.dtype)
    all_probs = np.zeros((len(paths), kept_probs.shape[1]), dtype=kept_probs.dtype)
    all_feats[ok], all_probs[ok] = kept_feats, kept_probs
    return all_feats, all_probs, ok


def group_folds(groups: Sequence[str], n_folds: int, seed: int) -> np.ndarray:
    """A fold number per item, whole groups kept together (scikit-learn's GroupKFold, shuffled)."""
    from sklearn.model_selection import GroupKFold

    folds = np.zeros(len(groups), dtype=int)
    splitter = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(groups)), groups=groups)):
        folds[test] = k + 1
    return folds


def cross_fit_no_tumour(tumour_train: np.ndarray, none_features: np.ndarray, none_folds: np.ndarray,
                        model_sha256: str, threshold: float, extra_none: np.ndarray | None = None) -> np.ndarray:
    """``P(no tumour)`` of every no-tumour slice from a gate fitted without its group fold;
    ``extra_none`` (e.g. tumour-erased training slices) is on the no-tumour side of every fit."""
    p = np.zeros(len(none_features))
    for fold in np.unique(none_folds):
        held = none_folds == fold
        gate = gate_with(tumour_train, none_features[~held], model_sha256, threshold, extra_none)
        p[held] = gate.p_no_tumour(none_features[held])
    return p


def gate_with(tumour_train: np.ndarray, none_features: np.ndarray, model_sha256: str,
              threshold: float, extra_none: np.ndarray | None = None) -> TumourGate:
    """The gate fitted on all the given tumour and no-tumour features (``extra_none`` too)."""
    none = none_features if extra_none is None else np.concatenate([none_features, extra_none])
    return fit_gate(np.concatenate([tumour_train, none]),
                    np.r_[np.zeros(len(tumour_train)), np.ones(len(none))], model_sha256, threshold)


def tumour_accuracy_with_gate(labels: np.ndarray, probs: np.ndarray, p_none: np.ndarray, threshold: float,
                              patients: Sequence[str]) -> dict[str, Any]:
    """Accuracy of tumour slices without and with the gate (a slice the gate calls no tumour is
    wrong), and the paired difference with a CI resampling patients."""
    stacked = np.column_stack([probs, p_none])

    def plain(y: np.ndarray, s: np.ndarray) -> float:
        return float((s[:, :-1].argmax(1) == y).mean())

    def gated(y: np.ndarray, s: np.ndarray) -> float:
        return float(((s[:, :-1].argmax(1) == y) & (s[:, -1] < threshold)).mean())

    diff = st.bootstrap_ci(lambda y, s: gated(y, s) - plain(y, s), labels, stacked, list(patients))
    return {"accuracy": plain(labels, stacked), "accuracy_with_gate": gated(labels, stacked),
            "difference": {"value": diff[0], "low": diff[1], "high": diff[2]},
            "called_no_tumour": float((p_none >= threshold).mean())}


def style_renderer(style: str | None, seed: int) -> Render:
    """``render(i, image)`` for :func:`features_of`: the image as is, or in ``style``."""
    if style is None:
        return lambda i, image: image
    return lambda i, image: styled(image, style, seed + i)


def erasure_renderer(boxes: Sequence[Box], sites: Sequence[tuple[float, float]], seed: int, control: bool,
                     image_size: int) -> Render:
    """``render(i, image)``: item ``i`` resized to the model's ``image_size`` (the paper pipeline, a
    plain resize, as counterfactual training sees it), then its tumour (or, with ``control``, a
    same-size region away from it) erased by the training-time eraser
    (:func:`brain_tumor.data.counterfactual.erased_copy`), seeded per item so the tumour and
    control copies are drawn alike; None where no control region fits."""
    def render(i: int, image: np.ndarray) -> np.ndarray | None:
        grid = prepare_slice(image, image_size, "paper").astype(np.float32) / 255.0
        return erased_copy(grid, boxes[i], np.random.default_rng(seed + i), sites, control)

    return render


def eraser_renderer(eraser: str, boxes: Sequence[Box]) -> Render:
    """``render(i, image)``: item ``i``'s tumour erased by one of the benchmark's erasers
    (:data:`brain_tumor.data.erasing.ERASERS`)."""
    erase = ERASERS[eraser]
    return lambda i, image: erase(image, boxes[i], GROW)
