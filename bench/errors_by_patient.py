"""What limits accuracy on new patients? The errors of a CV's held-out predictions, patient by
patient: how many patients hold them, which classes they are mistaken for, how confident the
model is when wrong, and a gallery of the wrong slices of the patients with the most errors
(the tumour box drawn, true -> predicted class and confidence in each caption).

Reads only the CV's committed files (config.yaml, fold-*/test_predictions.csv) and the dataset's
images; trains and predicts nothing. Writes ``errors_by_patient.json``, ``.csv``, ``.md`` and
``errors_by_patient.jpg`` to ``--out`` (default: the CV folder).

Example:
    python bench/errors_by_patient.py results/cv/official-freeze-15-bf16-e12-224
"""

from __future__ import annotations

import argparse
import csv
import io
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from brain_tumor.atomic import write_json, write_text
from brain_tumor.comparison import patients_by_path, read_predictions
from brain_tumor.config import portable_path, read_run_config
from brain_tumor.data.imageio import read_slice
from brain_tumor.data.manifest import CLASS_NAMES, load_records
from brain_tumor.evaluation.errors import PatientErrors, concentration, errors_by_patient
from brain_tumor.evaluation.plots import plot_overlay_grid
from brain_tumor.evaluation.report import markdown_table
from brain_tumor.leaderboard import fold_dirs


def gallery(patients: list[PatientErrors], paths: list[str], probs: np.ndarray, by_name: dict[str, Any],
            out: Path, n_patients: int = 8, per_patient: int = 4) -> Path:
    """The wrong slices of the patients with the most errors, most confident first."""
    images, titles, boxes = [], [], []
    for p in patients[:n_patients]:
        for row in p.wrong_indices[:per_patient]:
            record = by_name[paths[row]]
            grey = np.clip(read_slice(record.path) * 255, 0, 255).astype(np.uint8)
            images.append(np.repeat(grey[..., None], 3, axis=2))
            titles.append(f"{p.patient}: {p.label[:4]}->{CLASS_NAMES[int(probs[row].argmax())][:4]} "
                          f"{probs[row].max():.2f}")
            boxes.append(record.box or (0.5, 0.5, 0.0, 0.0))
    return plot_overlay_grid(images, titles, boxes, out, columns=per_patient,
                             title="Wrong slices of the patients with the most errors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cv_dir", type=Path, help="a `brain-tumor cv` results folder")
    parser.add_argument("--out", type=Path, help="default: the CV folder")
    args = parser.parse_args()
    out = args.out or args.cv_dir

    records = load_records(read_run_config(args.cv_dir)["data"]["root"])
    by_name = {r.result_name: r for r in records}
    patient_of = patients_by_path(args.cv_dir)
    paths, y, probs = read_predictions(fold_dirs(args.cv_dir))
    groups = [patient_of[p] for p in paths]
    patients = errors_by_patient(y, probs, groups, CLASS_NAMES)
    summary = concentration(patients)
    predicted = probs.argmax(1)
    pairs = Counter(f"{CLASS_NAMES[t]} -> {CLASS_NAMES[p]}" for t, p in zip(y, predicted) if t != p)
    confidence = probs.max(1)
    wrong = predicted != y
    result = {"cv": portable_path(args.cv_dir), **summary, "wrong_by_true_and_predicted": dict(pairs.most_common()),
              "median_confidence": {"right": float(np.median(confidence[~wrong])) if (~wrong).any() else None,
                                    "wrong": float(np.median(confidence[wrong])) if wrong.any() else None},
              "wrong_with_confidence_over_0.9": int((confidence[wrong] > 0.9).sum()),
              "patients": [{k: v for k, v in vars(p).items() if k != "wrong_indices"} | {"share_wrong": p.share_wrong}
                           for p in patients if p.n_wrong]}
    write_json(result, out / "errors_by_patient.json")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["patient", "label", "n_slices", "n_wrong", "share_wrong", "wrong_as", "mean_confidence_wrong",
                     "patient_answer"])
    for p in patients:
        writer.writerow([p.patient, p.label, p.n_slices, p.n_wrong, f"{p.share_wrong:.3f}",
                         ";".join(f"{k}:{v}" for k, v in p.wrong_as.items()),
                         "" if p.mean_confidence_wrong is None else f"{p.mean_confidence_wrong:.3f}", p.patient_answer])
    write_text(out / "errors_by_patient.csv", buffer.getvalue())
    gallery(patients, paths, probs, by_name, out / "errors_by_patient.jpg")
    write_text(out / "errors_by_patient.md", markdown(result))
    print(markdown(result))


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(result: dict[str, Any]) -> str:
    top = [[p["patient"], p["label"], str(p["n_slices"]), str(p["n_wrong"]),
            ", ".join(f"{k} {v}" for k, v in p["wrong_as"].items()), f"{p['mean_confidence_wrong']:.2f}",
            p["patient_answer"]] for p in result["patients"][:12]]  # patients with an error: confidence known
    median = result["median_confidence"]
    return "\n".join([
        f"# Errors by patient: `{result['cv']}`", "",
        f"{result['n_wrong_slices']} wrong of {result['n_slices']} held-out slices, in "
        f"{result['patients_with_an_error']} of {result['n_patients']} patients; "
        f"{result['patients_holding_half_the_errors']} patients hold half of them and "
        f"{result['patients_holding_80pct_of_errors']} hold 80%. {result['patients_mostly_wrong']} patients have "
        f"most of their slices wrong; {result['patients_answered_wrongly']} are answered wrongly when their slices' "
        f"probabilities are pooled. Median confidence {_number(median['right'])} when right, "
        f"{_number(median['wrong'])} when wrong; {result['wrong_with_confidence_over_0.9']} wrong "
        "slices above 0.9. Written by `bench/errors_by_patient.py`; gallery in `errors_by_patient.jpg`.", "",
        "| true -> predicted | wrong slices |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in result["wrong_by_true_and_predicted"].items()], "",
        "Patients with the most wrong slices:", "",
        markdown_table(["patient", "class", "slices", "wrong", "wrong as", "mean confidence when wrong",
                        "pooled answer"], top), ""])


if __name__ == "__main__":
    main()
