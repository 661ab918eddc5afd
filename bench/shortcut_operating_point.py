"""The shortcut benchmark at one operating point shared by every model: each model refers the
slices below the confidence that a fixed share of its own *validation* slices fall below
(label-free, no test data), so that models whose confidences differ in scale are compared at the
same referral burden on ordinary slices.

Reads ``shortcut_predictions.csv`` of ``brain-tumor shortcut-test`` (each slice's answer and
calibrated confidence under every method) and writes ``operating_point.json`` and
``operating_point.md`` beside it: per model, method and class, the share still called its own
class while answered, and the share set aside (referred), with 95% CIs resampling patients.

Example:
    python bench/shortcut_operating_point.py results/shortcut/X -m a=runs/a/model.pt -m b=runs/b/model.pt \
        --split results/cv/NAME/splits.json --fold 1 --refer-share 0.1
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brain_tumor.batched import predict_slices
from brain_tumor.data.imageio import read_slice
from brain_tumor.data.manifest import load_records
from brain_tumor.data.splits import load_split
from brain_tumor.evaluation.report import markdown_table
from brain_tumor.evaluation.statistics import bootstrap_mean
from brain_tumor.model_loading import load_predictor


def validation_confidences(checkpoint: Path, paths: list[str]) -> np.ndarray:
    predictor = load_predictor(checkpoint, engine="pytorch")
    return np.array([p.confidence for p in predict_slices(predictor, [read_slice(p) for p in paths])])


def summarise(rows: list[dict[str, str]], name: str, threshold: float, patient_of: dict[str, str],
              classes: list[str]) -> dict[str, Any]:
    groups = [patient_of[r["path"]] for r in rows]
    labels = np.array([r["label"] for r in rows])
    methods = [k.split("/", 1)[1] for k in rows[0] if k.startswith(f"{name}/")]
    out: dict[str, Any] = {}
    for method in methods:
        answers = [r[f"{name}/{method}"].split(":") for r in rows]
        predicted = np.array([a[0] for a in answers])
        confidence = np.array([float(a[1]) for a in answers])
        aside = confidence < threshold
        same = (predicted == labels) & ~aside
        per_class = {}
        for c in [*classes, "all"]:
            sel = np.ones(len(rows), bool) if c == "all" else labels == c
            g = [groups[i] for i in np.nonzero(sel)[0]]
            per_class[c] = {"n": int(sel.sum()), "same": bootstrap_mean(same[sel].astype(float), g),
                            "set_aside": bootstrap_mean(aside[sel].astype(float), g)}
        out[method] = per_class
    return out


def cell(v: list[float] | tuple[float, float, float]) -> str:
    return f"{100 * v[0]:.1f} [{100 * v[1]:.1f}, {100 * v[2]:.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shortcut_dir", type=Path)
    parser.add_argument("-m", "--checkpoint", action="append", required=True, help="NAME=MODEL, as in shortcut-test")
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--fold", type=int)
    parser.add_argument("--refer-share", type=float, default=0.1)
    args = parser.parse_args()

    with (args.shortcut_dir / "shortcut_predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    models = dict(item.split("=", 1) for item in args.checkpoint)
    checkpoint = torch.load(next(iter(models.values())), map_location="cpu", weights_only=True)
    records = load_records(checkpoint["config"]["data"]["root"])
    patient_of = {r.result_name: r.patient_id or r.result_name for r in records}
    split = load_split(args.split, args.fold)
    val_paths = [records[i].path for i in split.val]
    classes = list(checkpoint["class_names"])
    result: dict[str, Any] = {"refer_share_of_validation": args.refer_share, "n_validation": len(val_paths),
                              "models": {}}
    lines = [f"# The shortcut benchmark at a shared operating point\n\nEach model refers the slices whose calibrated "
             f"confidence is below the {100 * args.refer_share:.0f}th percentile of its own {len(val_paths)} "
             f"validation slices (training patients; no test data, no labels). Shares of the held-out test "
             f"slices, 95% CIs resampling patients. Written by `bench/shortcut_operating_point.py`.\n"]
    for name, path in models.items():
        confidences = validation_confidences(Path(path), val_paths)
        threshold = float(np.quantile(confidences, args.refer_share))
        summary = summarise(rows, name, threshold, patient_of, classes)
        result["models"][name] = {"threshold": threshold, "summary": summary}
        lines.append(f"## {name}\n\nThreshold {threshold:.4f}. Cells: still called its own class and answered / "
                     "set aside (referred), %.\n")
        table = [[method, *[f"{cell(v[c]['same'])} / {100 * v[c]['set_aside'][0]:.1f}" for c in [*classes, 'all']]]
                 for method, v in summary.items()]
        lines.append(markdown_table(["method", *classes, "all"], table))
        lines.append("")
    (args.shortcut_dir / "operating_point.json").write_text(json.dumps(result, indent=2))
    (args.shortcut_dir / "operating_point.md").write_text("\n".join(lines) + "\n")
    print(f"-> {args.shortcut_dir / 'operating_point.md'}")


if __name__ == "__main__":
    main()
