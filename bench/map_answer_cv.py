"""The tumour map's "no tumour" answer over a whole patient-wise CV (``train.tumour_map``, issue 22).

A CV scores the classifier; this takes, for every held-out slice of every fold, its fold model's
tumour evidence (from the fold's test_predictions.csv, or, for folds written before it held it,
from the fold model under ``--work-dir``), and so what a user gets with the map's answer on: the share of these tumour
slices answered "no tumour" (each fold at its own threshold, fitted on that fold's inner
validation slices), and the share answered right, paired with another CV on the same slices (a
recipe without the map, whose every answer is a tumour class). 95% CIs resample patients.

    python bench/map_answer_cv.py results/cv/MAP_CV --work-dir runs/cv/MAP_CV --baseline results/cv/OTHER_CV
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from brain_tumor.atomic import write_csv, write_text
from brain_tumor.batched import slice_evidence
from brain_tumor.comparison import patients_by_path, read_predictions
from brain_tumor.config import load_config
from brain_tumor.cv_report import fold_number
from brain_tumor.data.imageio import read_slice
from brain_tumor.data.manifest import CLASS_NAMES
from brain_tumor.evaluation.report import markdown_table
from brain_tumor.evaluation.statistics import bootstrap_ci, bootstrap_mean
from brain_tumor.inference import Predictor
from brain_tumor.onnx_runtime import file_sha256
from brain_tumor.tumour_evidence import answer_metrics


def fold_predictor(model: Path, sha256: str | None) -> Predictor:
    """A CV fold's model with a tumour map and its threshold; it must be the one the fold's
    run.json names (``sha256``), not one trained again (shared with ``bench/map_erased_cv.py``)."""
    if sha256 is None or file_sha256(model) != sha256:
        raise SystemExit(f"{model}: not the model whose predictions the fold holds (run.json's checkpoint sha256)")
    predictor = Predictor.from_checkpoint(model)
    if predictor.evidence_record is None:
        raise SystemExit(f"{model}: has no tumour map with a threshold")
    return predictor


def fold_evidence(model: Path, data_root: Path, paths: list[str], sha256: str | None) -> tuple[np.ndarray, float]:
    """Each held-out slice's tumour evidence under its fold model (:func:`fold_predictor`), and
    that model's threshold."""
    predictor = fold_predictor(model, sha256)
    images = torch.stack([predictor.to_tensor(read_slice(data_root / p))
                          for p in tqdm(paths, desc=model.parent.name, unit="img")])
    assert predictor.evidence_record is not None  # fold_predictor refuses a model without one
    return slice_evidence(predictor, images), float(predictor.evidence_record["threshold"])


def committed_evidence(fold_dir: Path) -> tuple[np.ndarray, float] | None:
    """The evidence a CV fold wrote itself (``tumour_evidence`` in test_predictions.csv, its
    threshold in metrics.json), or None for a fold written before folds wrote it."""
    with (fold_dir / "test_predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    answer = json.loads((fold_dir / "metrics.json").read_text()).get("tumour_map")
    if not rows or "tumour_evidence" not in rows[0] or not answer:
        return None
    return np.array([float(r["tumour_evidence"]) for r in rows]), float(answer["threshold"])


def pct(ci: tuple[float, float, float]) -> list[float]:
    return [round(100 * v, 2) for v in ci]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cv", type=Path, help="the map CV's results folder (fold-*/test_predictions.csv)")
    parser.add_argument("--work-dir", type=Path, help="its fold models (fold-K/model.pt), for folds written "
                        "before a fold's test_predictions.csv held each slice's tumour evidence")
    parser.add_argument("--baseline", type=Path, required=True, help="a CV of the same folds without the map")
    parser.add_argument("-o", "--output", type=Path, help="default: CV/map_answer")
    args = parser.parse_args()
    output = args.output or args.cv / "map_answer"
    data_root = Path(load_config(args.cv / "config.yaml").data.root)
    names = list(CLASS_NAMES)
    per_fold, pooled = {}, []
    for fold_dir in sorted(args.cv.glob("fold-*"), key=fold_number):
        k = fold_number(fold_dir)
        paths, labels, probs = read_predictions([fold_dir])
        found = committed_evidence(fold_dir)
        if found is None:
            if args.work_dir is None:
                raise SystemExit(f"{fold_dir}: its predictions hold no tumour evidence: give --work-dir")
            run = json.loads((fold_dir / "run.json").read_text())
            found = fold_evidence(args.work_dir / f"fold-{k}" / "model.pt", data_root, paths,
                                  (run.get("checkpoint") or {}).get("sha256"))
        evidence, threshold = found
        answer = answer_metrics(labels, probs, evidence, threshold, names)
        per_fold[k] = {"threshold": threshold, "n": len(paths),
                       "called_no_tumour_pct": round(100 * answer["called_no_tumour"], 2),
                       "classifier_accuracy_pct": round(100 * float((probs.argmax(1) == labels).mean()), 2),
                       "accuracy_with_answer_pct": round(100 * answer["accuracy_with_map_answer"], 2)}
        pooled += [(p, k, y, int(q.argmax()), float(e), threshold)
                   for p, y, q, e in zip(paths, labels, probs, evidence, strict=True)]
    paths = [r[0] for r in pooled]
    labels = np.array([r[2] for r in pooled])
    none = np.array([r[4] < r[5] for r in pooled])
    right = ~none & (labels == np.array([r[3] for r in pooled]))
    write_csv(output / "map_evidence.csv", ["path", "fold", "label", "classifier_predicted", "tumour_evidence",
                                             "threshold", "no_tumour"],
              [[p, k, names[y], names[q], f"{e:.6f}", f"{t:.6f}", int(n)]
               for (p, k, y, q, e, t), n in zip(pooled, none)])
    patient_of = patients_by_path(args.cv)
    unknown = [p for p in paths if p not in patient_of]
    if unknown:
        raise SystemExit(f"{unknown[0]} (and {len(unknown) - 1} more): not in the dataset's manifest, no patient")
    groups = [patient_of[p] for p in paths]
    base_paths, base_labels, base_probs = read_predictions(sorted(args.baseline.glob("fold-*")))
    base_right = dict(zip(base_paths, base_probs.argmax(1) == base_labels))
    paired = np.array([[float(r), float(base_right[p])] for r, p in zip(right, paths)])
    difference = bootstrap_ci(lambda _, v: float((v[:, 0] - v[:, 1]).mean()), labels, paired, groups)
    result = {"cv": args.cv.name, "baseline": args.baseline.name, "n": len(pooled), "per_fold": per_fold,
              "called_no_tumour_pct": pct(bootstrap_mean(none.astype(float), groups)),
              "called_no_tumour_per_class_pct": {c: round(100 * float(none[labels == i].mean()), 2)
                                                 for i, c in enumerate(names)},
              "accuracy_with_answer_pct": pct(bootstrap_mean(right.astype(float), groups)),
              "baseline_accuracy_pct": round(100 * float(paired[:, 1].mean()), 2),
              "difference_vs_baseline_points": pct(difference)}
    write_text(output / "map_answer.json", json.dumps(result, indent=2) + "\n")
    write_text(output / "map_answer.md", markdown(result))
    print(markdown(result))


def markdown(r: dict[str, Any]) -> str:
    def cell(v: list[float]) -> str:
        return f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"

    table = markdown_table(["fold", "slices", "threshold", "called no tumour %", "classifier accuracy %",
                            "accuracy with the answer on %"],
                           [[str(k), str(v["n"]), f"{v['threshold']:.4f}", f"{v['called_no_tumour_pct']:.2f}",
                             f"{v['classifier_accuracy_pct']:.2f}", f"{v['accuracy_with_answer_pct']:.2f}"]
                            for k, v in r["per_fold"].items()])
    per_class = ", ".join(f"{c} {v:.2f}%" for c, v in r["called_no_tumour_per_class_pct"].items())
    return "\n".join([f"# The tumour map's answer over the CV `{r['cv']}`", "",
                      f"{r['n']} held-out tumour slices, each answered by its fold's model at that fold's threshold "
                      "(fitted on its inner validation slices). 95% CIs resample patients.", "",
                      f"- Answered \"no tumour\": {cell(r['called_no_tumour_pct'])}% ({per_class}).",
                      f"- Answered right with the answer on: {cell(r['accuracy_with_answer_pct'])}%; "
                      f"`{r['baseline']}` on the same slices: {r['baseline_accuracy_pct']:.2f}%; paired difference "
                      f"{cell(r['difference_vs_baseline_points'])} points.", "", table, ""])


if __name__ == "__main__":
    main()
