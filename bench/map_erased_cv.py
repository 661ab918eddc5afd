"""The tumour map with the tumour erased, over a whole patient-wise CV (issue 22), and where to put
its threshold.

For every fold of a CV trained with ``train.tumour_map``, its fold model's tumour evidence on
each held-out tumour slice as it is (from the fold's test_predictions.csv) and with the tumour's
box (grown by 15%) erased by each eraser (``box_fill`` resembles the counterfactual eraser used
in training; ``inpaint`` and ``mirror`` were never used in training), and on the fold's inner
validation slices as they are and box-filled. Then, for each rule that places a fold's threshold
from its *validation* slices only, what the held-out slices get: the share of erased slices set
aside ("no tumour") per class, the share of unmodified slices called "no tumour", the share
answered right with the answer on, paired with a CV without the map on the same slices. Rules:

- ``deployed``: the threshold in the checkpoint (the 1% quantile of validation evidence);
- ``clean-5%``: the 5% quantile of the validation slices' evidence;
- ``erased-90%``: the threshold below which 90% of the box-filled validation slices fall (the
  issue's goal, reached on validation: what it costs on unmodified held-out slices).

Also the ROC AUC of the evidence, unmodified against erased, per class (mean over folds: each fold's
evidence has its own scale). 95% CIs resample patients. Resumable: each fold's evidence is kept
in ``OUTPUT/evidence/fold-K.csv`` and not computed again.

    python bench/map_erased_cv.py results/cv/MAP_CV --work-dir runs/cv/MAP_CV --baseline results/cv/OTHER_CV
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from map_answer_cv import committed_evidence, fold_predictor
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from brain_tumor.atomic import write_csv, write_text
from brain_tumor.batched import slice_evidence
from brain_tumor.comparison import read_predictions
from brain_tumor.config import load_config, portable_path
from brain_tumor.cv_report import fold_number
from brain_tumor.data.erasing import ERASERS, GROW
from brain_tumor.data.imageio import read_slice
from brain_tumor.data.manifest import CLASS_NAMES, Record, load_records
from brain_tumor.data.splits import load_split
from brain_tumor.environment import describe_environment
from brain_tumor.evaluation.report import markdown_table
from brain_tumor.evaluation.statistics import bootstrap_ci, bootstrap_mean
from brain_tumor.inference import Predictor

VAL_ERASER = "box_fill"  # the validation slices' eraser for the erased-90% rule (like training's)
RULES = ("deployed", "clean-5%", "erased-90%")


def evidence_of(predictor: Predictor, records: list[Record], eraser: str | None, desc: str) -> np.ndarray:
    """Each slice's tumour evidence, its tumour erased by ``eraser`` (None: as it is)."""
    images = []
    for r in tqdm(records, desc=desc, unit="img"):
        image = read_slice(r.path)
        if eraser is not None:
            assert r.box is not None
            image = ERASERS[eraser](image, r.box, GROW)
        images.append(predictor.to_tensor(image))
    return slice_evidence(predictor, torch.stack(images))


def fold_rows(cv: Path, k: int, work_dir: Path, records: list[Record], erasers: list[str]) -> list[dict[str, str]]:
    """One fold's evidence rows (path, split, label, method, evidence, threshold)."""
    fold_dir = cv / f"fold-{k}"
    model = work_dir / f"fold-{k}" / "model.pt"
    run = json.loads((fold_dir / "run.json").read_text())
    predictor = fold_predictor(model, (run.get("checkpoint") or {}).get("sha256"))
    assert predictor.evidence_record is not None  # fold_predictor refuses a model without one
    threshold = f"{float(predictor.evidence_record['threshold']):.6f}"
    split = load_split(cv / "splits.json", k)
    by_name = {r.result_name: r for r in records}
    paths, _, _ = read_predictions([fold_dir])
    test = [by_name[p] for p in paths]
    found = committed_evidence(fold_dir)  # folds written before folds wrote it: from the model
    clean = found[0] if found is not None else evidence_of(predictor, test, None, f"fold {k} clean")
    val = [records[i] for i in split.val if records[i].box is not None]
    rows = [(r, "test", "clean", e) for r, e in zip(test, clean, strict=True)]
    boxed = [r for r in test if r.box is not None]
    for eraser in erasers:
        rows += list(zip(boxed, ["test"] * len(boxed), [eraser] * len(boxed),
                         evidence_of(predictor, boxed, eraser, f"fold {k} {eraser}")))
    for eraser in (None, VAL_ERASER):
        rows += list(zip(val, ["val"] * len(val), [eraser or "clean"] * len(val),
                         evidence_of(predictor, val, eraser, f"fold {k} val {eraser or 'clean'}")))
    sha = str(run["checkpoint"]["sha256"])
    return [{"path": r.result_name, "fold": str(k), "split": s, "label": r.label, "method": m,
             "evidence": f"{float(e):.6f}", "threshold": threshold, "model_sha256": sha} for r, s, m, e in rows]


def rule_thresholds(rows: list[dict[str, str]]) -> dict[str, float]:
    """One fold's threshold under each rule, from its validation rows only."""
    clean = np.array([float(r["evidence"]) for r in rows if r["split"] == "val" and r["method"] == "clean"])
    erased = np.array([float(r["evidence"]) for r in rows if r["split"] == "val" and r["method"] == VAL_ERASER])
    return {"deployed": float(rows[0]["threshold"]), "clean-5%": float(np.quantile(clean, 0.05)),
            "erased-90%": float(np.quantile(erased, 0.9))}


def summarise(by_fold: dict[int, list[dict[str, str]]], cv: Path, baseline: Path, patient_of: dict[str, str],
              erasers: list[str]) -> dict[str, Any]:
    names = list(CLASS_NAMES)
    thresholds = {k: rule_thresholds(rows) for k, rows in by_fold.items()}
    test = [r for rows in by_fold.values() for r in rows if r["split"] == "test"]
    predicted = {}
    for k in by_fold:
        paths, _, probs = read_predictions([cv / f"fold-{k}"])
        predicted.update(zip(paths, probs.argmax(1)))
    base_paths, base_labels, base_probs = read_predictions(sorted(baseline.glob("fold-*")))
    base_right = dict(zip(base_paths, base_probs.argmax(1) == base_labels))
    out: dict[str, Any] = {"thresholds": thresholds, "rules": {}, "auc": {}}
    for rule in RULES:
        entry: dict[str, Any] = {}
        for method in ["clean", *erasers]:
            sel = [r for r in test if r["method"] == method]
            below = np.array([float(r["evidence"]) < thresholds[int(r["fold"])][rule] for r in sel])
            labels = np.array([names.index(r["label"]) for r in sel])
            groups = [patient_of[r["path"]] for r in sel]
            m: dict[str, Any] = {"n": len(sel), "no_tumour_pct": pct(bootstrap_mean(below.astype(float), groups)),
                                 "per_class_pct": {c: pct(bootstrap_mean(below[labels == i].astype(float),
                                                                         [g for g, y in zip(groups, labels) if y == i]))
                                                   for i, c in enumerate(names)}}
            if method == "clean":
                right = ~below & (labels == np.array([predicted[r["path"]] for r in sel]))
                paired = np.column_stack([right, [base_right[r["path"]] for r in sel]]).astype(float)
                m["right_pct"] = pct(bootstrap_mean(right.astype(float), groups))
                m["baseline_right_pct"] = round(100 * float(paired[:, 1].mean()), 2)
                m["difference_points"] = pct(bootstrap_ci(lambda _, v: float((v[:, 0] - v[:, 1]).mean()),
                                                          labels, paired, groups))
            entry[method] = m
        out["rules"][rule] = entry
    for method in erasers:
        out["auc"][method] = {c: round(float(np.mean([fold_auc(rows, method, c) for rows in by_fold.values()])), 3)
                              for c in names}
    return out


def fold_auc(rows: list[dict[str, str]], method: str, label: str) -> float:
    """ROC AUC of one fold's evidence: its unmodified held-out slices of ``label`` against the same
    slices erased by ``method``."""
    def scores(m: str) -> list[float]:
        return [float(r["evidence"]) for r in rows if r["split"] == "test" and r["method"] == m and r["label"] == label]

    clean, erased = scores("clean"), scores(method)
    return float(roc_auc_score([1] * len(clean) + [0] * len(erased), clean + erased))


def pct(ci: tuple[float, float, float]) -> list[float]:
    return [round(100 * v, 1) for v in ci]


def markdown(r: dict[str, Any]) -> str:
    def cell(v: list[float]) -> str:
        return f"{v[0]:.1f} [{v[1]:.1f}, {v[2]:.1f}]"

    names = list(CLASS_NAMES)
    lines = [f"# The tumour map with the tumour erased, over the CV `{r['cv']}`", "",
             f"{r['n_test']} held-out tumour slices of {r['n_patients']} patients, each fold's model on its own "
             f"held-out patients; the box grown by {int(100 * GROW)}% before erasing. Erasers: `box_fill` resembles "
             "training's counterfactual eraser, the others were never used in training. Every threshold comes from "
             "the fold's inner validation slices, never from these. 95% CIs resample patients with the thresholds "
             "held fixed (the error of a quantile of ~240 validation slices is not in them). \"Set aside\" here "
             "is the map's \"no tumour\" alone (no referral, no OOD flag, no gate).", ""]
    for rule in RULES:
        e = r["rules"][rule]
        clean = e["clean"]
        lines += [f"## Rule `{rule}`", "",
                  "Thresholds per fold: " + ", ".join(f"{v[rule]:.3f}" for v in r["thresholds"].values()) + ".", "",
                  f"- Unmodified slices called \"no tumour\": {cell(clean['no_tumour_pct'])}%; answered right with "
                  f"the answer on {cell(clean['right_pct'])}% against {clean['baseline_right_pct']:.2f}% for "
                  f"`{r['baseline']}`, {cell(clean['difference_points'])} points.", "",
                  markdown_table(["eraser", *(f"{c} set aside %" for c in names), "all set aside %"],
                                 [[m, *(cell(e[m]["per_class_pct"][c]) for c in names), cell(e[m]["no_tumour_pct"])]
                                  for m in e if m != "clean"]), ""]
    lines += ["## ROC AUC of the evidence, unmodified against erased (mean over folds)", "",
              markdown_table(["eraser", *names], [[m, *(f"{v[c]:.3f}" for c in names)] for m, v in r["auc"].items()]),
              ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cv", type=Path, help="the map CV's results folder")
    parser.add_argument("--work-dir", type=Path, required=True, help="its fold models (fold-K/model.pt)")
    parser.add_argument("--baseline", type=Path, required=True, help="a CV of the same folds without the map")
    parser.add_argument("--erasers", nargs="+", default=["box_fill", "inpaint"], choices=sorted(ERASERS))
    parser.add_argument("-o", "--output", type=Path, help="default: CV/map_erased")
    args = parser.parse_args()
    output = args.output or args.cv / "map_erased"
    data_root = Path(load_config(args.cv / "config.yaml").data.root)
    records = load_records(data_root)
    started = time.time()
    by_fold: dict[int, list[dict[str, str]]] = {}
    for fold_dir in sorted(args.cv.glob("fold-*"), key=fold_number):
        k = fold_number(fold_dir)
        cache = output / "evidence" / f"fold-{k}.csv"
        if not cache.is_file():
            rows = fold_rows(args.cv, k, args.work_dir, records, args.erasers)
            write_csv(cache, list(rows[0]), [list(r.values()) for r in rows])
        with cache.open() as f:
            by_fold[k] = list(csv.DictReader(f))
        run = json.loads((fold_dir / "run.json").read_text())
        if {r.get("model_sha256") for r in by_fold[k]} != {run["checkpoint"]["sha256"]}:
            raise SystemExit(f"{cache}: made from another model than {fold_dir}/run.json names; remove it")
        if not {"clean", *args.erasers} <= {r["method"] for r in by_fold[k] if r["split"] == "test"}:
            raise SystemExit(f"{cache}: made without some of these erasers; remove it to compute it again")
    patient_of = {r.result_name: r.patient_id or r.result_name for r in records}
    result = summarise(by_fold, args.cv, args.baseline, patient_of, args.erasers)
    test = [r for rows in by_fold.values() for r in rows if r["split"] == "test" and r["method"] == "clean"]
    result.update(cv=args.cv.name, baseline=args.baseline.name, work_dir=portable_path(args.work_dir),
                  n_test=len(test), n_patients=len({patient_of[r["path"]] for r in test}),
                  erasers=args.erasers, seconds_this_invocation=round(time.time() - started, 1),
                  environment=describe_environment())
    write_text(output / "map_erased.json", json.dumps(result, indent=2) + "\n")
    write_text(output / "map_erased.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
