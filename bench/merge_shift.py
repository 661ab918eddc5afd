"""Pair models whose shift benchmarks ran at different times on the same slices.

`brain-tumor shift-test` pairs the models it is given in one run. A model trained later can be set
beside them without rerunning the others, when its run used the same split, fold and ``--seed``
(the shifted slices are then the same): this reads each run's ``shift_predictions.csv``, checks
that the slices and labels agree, and writes the paired statistics of
:func:`brain_tumor.robustness.shift_statistics` (the first model given is the reference) as
``shift.json`` and ``shift.md`` under ``--output``.

    python bench/merge_shift.py results/robustness/official-fold-1-bf16-e12-mid \\
        results/robustness/official-fold-1-bf16-e12-torchio --reference robust-mid \\
        --output results/robustness/official-fold-1-bf16-e12-torchio-vs-mid

Models keep the names their runs gave them; ``--reference NAME`` picks the one every other is
paired with (default: the first column of the first folder).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from brain_tumor.atomic import write_text
from brain_tumor.robustness import shift_markdown, shift_statistics


def read_predictions(folder: Path) -> tuple[list[str], list[str], np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """Paths, patients, labels and ``{model: {shift: predicted classes}}`` of one shift benchmark."""
    with (folder / "shift_predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{folder}: no slices in shift_predictions.csv")
    predictions: dict[str, dict[str, np.ndarray]] = {}
    for column in rows[0]:
        if column in ("path", "patient_id", "label"):
            continue
        model, _, shift = column.partition("/")
        predictions.setdefault(model, {})[shift] = np.array([int(r[column]) for r in rows])
    return ([r["path"] for r in rows], [r["patient_id"] for r in rows],
            np.array([int(r["label"]) for r in rows]), predictions)


def merged(folders: list[Path]) -> tuple[list[str], np.ndarray, dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Every folder's models over the slices of the first folder (all must hold the same slices and
    labels, and each the same seed), with each model's per-shift accuracy as shift-test reports it."""
    paths, groups, labels, predictions = read_predictions(folders[0])
    seeds = {json.loads((d / "shift.json").read_text()).get("seed") for d in folders}
    if len(seeds) != 1:
        raise ValueError(f"the runs used different --seed values {sorted(map(str, seeds))}: their shifts differ")
    results: dict[str, Any] = {}
    for folder in folders:
        other_paths, _, other_labels, other = read_predictions(folder)
        order = {p: i for i, p in enumerate(other_paths)}
        if set(order) != set(paths):
            raise ValueError(f"{folder}: not the same slices as {folders[0]}")
        index = np.array([order[p] for p in paths])
        if not np.array_equal(other_labels[index], labels):
            raise ValueError(f"{folder}: labels differ from {folders[0]}'s")
        runs = json.loads((folder / "shift.json").read_text())["models"]
        for model, columns in other.items():
            if model in predictions and folder != folders[0]:
                raise ValueError(f"{folder}: a model named {model!r} is already in an earlier folder")
            predictions[model] = {shift: column[index] for shift, column in columns.items()}
            results[model] = runs[model]
    return groups, labels, predictions, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+", help="shift-test output folders (shift_predictions.csv)")
    parser.add_argument("--reference", help="The model every other is paired with (default: the first).")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    groups, labels, predictions, results = merged(args.folders)
    if args.reference:
        if args.reference not in predictions:
            parser.error(f"--reference {args.reference!r}: not one of {sorted(predictions)}")
        predictions = {args.reference: predictions[args.reference],
                       **{m: p for m, p in predictions.items() if m != args.reference}}
        results = {m: results[m] for m in predictions}
    statistics = shift_statistics(predictions, labels, groups)
    args.output.mkdir(parents=True, exist_ok=True)
    write_text(args.output / "shift.json", json.dumps(
        {"n_test": len(labels), "n_patients": len(set(groups)), "sources": [str(d) for d in args.folders],
         "models": results, "statistics": statistics}, indent=2))
    write_text(args.output / "shift.md", shift_markdown(results, len(labels), statistics))
    print(f"-> {args.output / 'shift.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
