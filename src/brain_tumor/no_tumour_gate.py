"""``brain-tumor no-tumour-gate``: fit one model's "no tumour" gate and measure it, shortcut included.

Writes ``gate.json`` (to put beside the model, where ``predict`` and ``serve`` find it) and
``no_tumour.json``/``.md`` with every figure; the features are cached under ``cache_dir`` per
block, so an interrupted run resumes without recomputing finished blocks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from brain_tumor.atomic import atomic_path, write_text
from brain_tumor.data.manifest import Record, load_records
from brain_tumor.evaluation.external import read_collection
from brain_tumor.evaluation.no_tumour import (
    cross_fit_no_tumour,
    eraser_renderer,
    erasure_renderer,
    features_of,
    gate_with,
    group_folds,
    style_renderer,
    tumour_accuracy_with_gate,
)
from brain_tumor.evaluation.run_eval import write_json
from brain_tumor.inference import Predictor
from brain_tumor.model_loading import load_predictor
from brain_tumor.onnx_runtime import file_sha256
from brain_tumor.source_style import STYLES

log = logging.getLogger(__name__)

DEPLOYED = "gate: tumour slices as they are and in every style"  # the variant written to gate.json
ERASED = "gate: + tumour-erased training slices as no tumour, erased elsewhere as tumour"  # with erased_negatives
HELD_OUT_ERASER = "inpaint"  # never used in training: the erased test slices the gate is judged on


def _cached(path: Path, compute: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features, probs, ok)`` from ``path`` (.npz, plain arrays) or computed and saved atomically."""
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return z["features"], z["probs"], z["ok"]
    features, probs, ok = compute()
    with atomic_path(path, suffix=".npz") as tmp, tmp.open("wb") as f:
        np.savez(f, features=features, probs=probs, ok=ok)
    return features, probs, ok


def run_no_tumour_gate(checkpoint: Path, tumour_data: Path, splits: Path, fold: int, no_tumour_data: Path,
                       output: Path, cache_dir: Path, per_class: int = 200, n_group_folds: int = 5,
                       threshold: float = 0.5, seed: int = 0, erased_negatives: bool = False) -> dict[str, Any]:
    """The whole experiment; see the module docstring of :mod:`brain_tumor.evaluation.no_tumour`.

    With ``erased_negatives``, a further variant also learns from the training slices with their
    tumour erased (as "no tumour") and with a same-size region erased elsewhere (still tumour), by
    the training-time eraser, and is the one written to gate.json; every variant is then also
    judged on the test slices with their tumour erased by a held-out eraser (inpainting)."""
    started = time.perf_counter()
    predictor = load_predictor(checkpoint, engine="pytorch")  # features come from the PyTorch network
    sha = file_sha256(checkpoint)
    records = load_records(tumour_data)
    split = json.loads(splits.read_text())[fold - 1]
    names = predictor.class_names
    rng = np.random.default_rng(seed)
    train_pool = np.asarray(split["train"] + split["val"])
    train_labels = np.asarray([names.index(records[i].label) for i in train_pool])
    picked = np.concatenate([rng.choice(train_pool[train_labels == k], min(per_class, int((train_labels == k).sum())),
                                        replace=False) for k in range(len(names))])
    test = np.asarray(split["test"])
    test_paths = [records[i].path for i in test]
    test_labels = np.asarray([names.index(records[i].label) for i in test])
    patients = [records[i].patient_id or str(records[i].index) for i in test]
    none_items = [item for item in read_collection(no_tumour_data) if item.label == "no_tumour"]
    none_paths = [str(item.path) for item in none_items]
    none_groups = [item.group for item in none_items]
    inputs = json.dumps(["rows-per-path", fold, seed, per_class, [str(p) for p in test_paths], none_paths,
                         picked.tolist()])  # the format first: caches of an earlier layout are not reused
    block = cache_dir / f"{sha[:16]}-{hashlib.sha256(inputs.encode()).hexdigest()[:16]}"  # new inputs, new cache

    train_paths = [records[i].path for i in picked]
    train_clean, _, ok_clean = _cached(block / "train-as-is.npz", partial(
        features_of, predictor, train_paths, style_renderer(None, seed), "tumour train, as is"))
    train_styled = {style: _cached(block / f"train-{style}.npz", partial(
        features_of, predictor, train_paths, style_renderer(style, seed), f"tumour train, {style}"))
        for style in STYLES}
    none_feat, none_probs, none_ok = _cached(block / "no-tumour.npz", partial(
        features_of, predictor, none_paths, style_renderer(None, seed), "no tumour"))
    test_blocks = {style: _cached(block / f"test-{style or 'as-is'}.npz", partial(
        features_of, predictor, test_paths, style_renderer(style, seed + 10_000), f"tumour test, {style or 'as is'}"))
        for style in (None, *STYLES)}

    erased_train: tuple[np.ndarray, np.ndarray] | None = None
    erased_test: tuple[np.ndarray, np.ndarray] | None = None
    if erased_negatives:
        if predictor.preprocessing.pipeline != "paper":
            raise ValueError("--erased-negatives needs a model of the paper pipeline (the others crop and pad, which "
                             "moves the tumour boxes), as counterfactual training does")
        erased_train, erased_test = _erased_blocks(predictor, records, picked, train_pool, test, block, seed)

    none_feat, none_probs = none_feat[none_ok], none_probs[none_ok]
    kept_groups = [g for g, ok in zip(none_groups, none_ok) if ok]
    none_folds = group_folds(kept_groups, n_group_folds, seed)
    def with_styles(styles: list[str]) -> np.ndarray:
        return np.concatenate([train_clean[ok_clean], *(train_styled[s][0][train_styled[s][2]] for s in styles)])

    variants: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    if erased_train is not None:
        variants[ERASED] = (np.concatenate([with_styles(list(STYLES)), erased_train[1]]), erased_train[0])
    variants[DEPLOYED] = (with_styles(list(STYLES)), None)
    variants.update({f"leave one style out: without {s}": (with_styles([t for t in STYLES if t != s]), None)
                     for s in STYLES})
    variants["ablation: no styled tumour slices"] = (with_styles([]), None)
    results: dict[str, Any] = {}
    deployable = None
    for name, (tumour_train, extra_none) in variants.items():
        gate = gate_with(tumour_train, none_feat, sha, threshold, extra_none)
        deployable = deployable or gate
        p_none_cv = cross_fit_no_tumour(tumour_train, none_feat, none_folds, sha, threshold, extra_none)
        tumour: dict[str, Any] = {}
        for style, (feat, probs, ok) in test_blocks.items():
            unseen = style is not None and (name.endswith(f"without {style}") or name.startswith("ablation"))
            label = "as is" if style is None else style + (" (not in the gate's training)" if unseen else "")
            tumour[label] = tumour_accuracy_with_gate(test_labels[ok], probs[ok], gate.p_no_tumour(feat[ok]),
                                                      threshold, [p for p, k in zip(patients, ok) if k])
        results[name] = {
            "no_tumour_called_no_tumour": float((p_none_cv >= threshold).mean()),
            "no_tumour_called_no_tumour_by_group": _by_group(p_none_cv >= threshold, kept_groups),
            "tumour_test": tumour}
        if erased_test is not None:
            feat, labels = erased_test
            called = gate.p_no_tumour(feat) >= threshold
            results[name]["tumour_erased_test_called_no_tumour"] = {
                n: float(called[labels == k].mean()) if (labels == k).any() else None for k, n in enumerate(names)}
    assert deployable is not None
    summary = {
        "model": checkpoint.name, "model_sha256": sha, "fold": fold, "threshold": threshold, "seed": seed,
        "tumour_train_slices": int(ok_clean.sum()), "styles": list(STYLES),
        "deployed": ERASED if erased_negatives else DEPLOYED,
        "erased_negatives": ({"train_erased": len(erased_train[0]), "train_control": len(erased_train[1]),
                              "test_eraser": HELD_OUT_ERASER, "test_erased": len(erased_test[1])}
                             if erased_train is not None and erased_test is not None else None),
        "tumour_test_slices": len(test), "tumour_test_patients": len(set(patients)),
        "no_tumour_slices": int(none_ok.sum()), "no_tumour_groups": len(set(kept_groups)),
        "no_tumour_group_folds": n_group_folds,
        "no_tumour_top_class_without_gate": {n: float((none_probs.argmax(1) == k).mean()) for k, n in enumerate(names)},
        "results": results, "compute": predictor.compute, "seconds": round(time.perf_counter() - started, 1),
        "command_settings": {"per_class": per_class, "n_group_folds": n_group_folds}}
    output.mkdir(parents=True, exist_ok=True)
    write_json(deployable.to_dict(), output / "gate.json")
    write_json(summary, output / "no_tumour.json")
    write_text(output / "no_tumour.md", no_tumour_markdown(summary))
    return summary


Pair = tuple[np.ndarray, np.ndarray]


def _erased_blocks(predictor: Predictor, records: list[Record], picked: np.ndarray, train_pool: np.ndarray,
                   test: np.ndarray, block: Path, seed: int) -> tuple[Pair, Pair]:
    """``((tumour-erased, erased-elsewhere) features of the picked training slices, (features,
    labels) of the test slices with the tumour erased by the held-out eraser)``; slices without a
    tumour box, or where no control region fits, are left out."""
    names = predictor.class_names
    boxed = [(records[i].path, b) for i in picked if (b := records[i].box) is not None]
    sites = [(b[0], b[1]) for i in train_pool if (b := records[i].box) is not None]
    paths, boxes = [p for p, _ in boxed], [b for _, b in boxed]
    erased: list[np.ndarray] = []
    for control in (False, True):
        kind = "erased elsewhere" if control else "tumour erased"
        render = erasure_renderer(boxes, sites, seed + 20_000, control, predictor.preprocessing.image_size)
        feat, _, ok = _cached(block / f"train-{kind.replace(' ', '-')}.npz",
                              partial(features_of, predictor, paths, render, f"tumour train, {kind}"))
        erased.append(feat[ok])
    test_boxed = [(records[i], b) for i in test if (b := records[i].box) is not None]
    feat, _, ok = _cached(block / f"test-erased-{HELD_OUT_ERASER}.npz", partial(
        features_of, predictor, [r.path for r, _ in test_boxed],
        eraser_renderer(HELD_OUT_ERASER, [b for _, b in test_boxed]), f"tumour test, {HELD_OUT_ERASER}"))
    labels = np.asarray([names.index(r.label) for r, _ in test_boxed])[ok]
    return (erased[0], erased[1]), (feat[ok], labels)


def _by_group(called: np.ndarray, groups: list[str]) -> float:
    """Share of groups (near-duplicate clusters) whose slices are mostly called no tumour."""
    g = np.asarray(groups)
    return float(np.mean([called[g == k].mean() >= 0.5 for k in np.unique(g)]))


def no_tumour_markdown(summary: dict[str, Any]) -> str:
    lines = [f"# No-tumour gate of `{summary['model']}` (CV fold {summary['fold']})", "",
             f"Gate: logistic regression on the model's penultimate features, threshold {summary['threshold']}. "
             f"Tumour slices: {summary['tumour_train_slices']} of the fold's training patients, as they are and, "
             f"per variant, copies in the styles {', '.join(summary['styles'])}; judged on "
             f"{summary['tumour_test_slices']} slices of {summary['tumour_test_patients']} test patients (never seen "
             f"by the model or the gate), as they are and in each style. No-tumour slices: "
             f"{summary['no_tumour_slices']} in {summary['no_tumour_groups']} near-duplicate groups, cross-fitted over "
             f"{summary['no_tumour_group_folds']} group folds. Accuracy differences: 95% CI resampling patients. "
             f"`gate.json` is the first variant.", ""]
    for name, r in summary["results"].items():
        lines += [f"## {name}", "",
                  f"No-tumour slices called no tumour: {100 * r['no_tumour_called_no_tumour']:.1f}% "
                  f"(groups: {100 * r['no_tumour_called_no_tumour_by_group']:.1f}%).", "",
                  "| tumour test slices | called no tumour | accuracy | with the gate | difference |",
                  "|---|---|---|---|---|"]
        for style, t in r["tumour_test"].items():
            d = t["difference"]
            lines.append(f"| {style} | {100 * t['called_no_tumour']:.1f}% | {100 * t['accuracy']:.2f}% | "
                         f"{100 * t['accuracy_with_gate']:.2f}% | {100 * d['value']:+.2f} "
                         f"[{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] |")
        lines.append("")
        if "tumour_erased_test_called_no_tumour" in r:
            shares = ", ".join(f"{n} {'-' if v is None else f'{100 * v:.1f}%'}"
                               for n, v in r["tumour_erased_test_called_no_tumour"].items())
            lines += ["Test slices with the tumour erased by a held-out eraser "
                      f"({summary['erased_negatives']['test_eraser']}), called no tumour: {shares}.", ""]
    return "\n".join(lines)
