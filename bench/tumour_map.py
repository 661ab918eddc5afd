"""What a model's tumour map (``train.tumour_map``) says on slices and styles it was not tuned on.

On the held-out slices of one CV fold (patients the model never saw), with a tumour box:
- where the map's strongest cell lies: inside the tumour's grown box or not (a pointing game for
  the map itself, not for Grad-CAM);
- how many tumour slices the map answers "no tumour", as they are and in each style of
  :mod:`brain_tumor.source_style` (small web image, inverted contrast, remapped histogram: crude
  stand-ins for other sources and sequences, none used in training);
with the tumour erased by each eraser of the shortcut benchmark (``box_fill`` and ``tissue_patch``
resemble the counterfactual eraser used in training; ``inpaint`` and ``mirror`` do not), how well the evidence tells the
erased slices from the unmodified ones (ROC AUC) and how many are set aside at the deployed
threshold and at the 5% validation quantile (both fitted on inner validation slices, never here);
and on a no-tumour collection (Br35H, never used in training), how many slices it answers "no
tumour". CIs resample patients (tumour slices) or near-duplicate groups (no-tumour slices).
Unlike the no-tumour gate (``brain-tumor no-tumour-gate``), the map never saw the no-tumour
collection, so "which collection" cannot be what it learnt.

    python bench/tumour_map.py -m runs/cv/NAME/fold-1/model.pt --split results/cv/NAME/splits.json --fold 1 \\
        --data ../shared/data/figshare-cheng2015 --no-tumour ../shared/data/br35h-no-tumour \\
        --output results/shortcut/NAME-tumour-map
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from brain_tumor.answers import NO_TUMOUR, Prediction
from brain_tumor.atomic import write_text
from brain_tumor.batched import chunks, predict_slices
from brain_tumor.config import portable_path
from brain_tumor.data.erasing import ERASERS, GROW, box_mask
from brain_tumor.data.imageio import read_slice
from brain_tumor.data.manifest import load_records
from brain_tumor.data.splits import load_split
from brain_tumor.evaluation.external import read_collection
from brain_tumor.evaluation.report import markdown_table
from brain_tumor.evaluation.statistics import bootstrap_mean
from brain_tumor.model import has_tumour_map, stage_features_fp32_stem, tumour_map_logits
from brain_tumor.model_loading import load_predictor, model_sha256
from brain_tumor.source_style import STYLES, styled


def strongest_cell_in_box(predictor: Any, images: list[np.ndarray], boxes: list[Any]) -> np.ndarray:
    """Per slice, whether the map's strongest cell lies inside the tumour's box grown by GROW."""
    batch = torch.stack([predictor.to_tensor(im) for im in images])
    hits = []
    with torch.inference_mode():
        for part, start in zip(chunks(batch, 32), range(0, len(batch), 32)):
            third, _ = stage_features_fp32_stem(predictor.network, predictor.model_input(part))
            logits = tumour_map_logits(predictor.network, third)[:, 0]
            h, w = logits.shape[-2:]
            for k, cell in enumerate(logits.flatten(1).argmax(1).tolist()):
                size = predictor.preprocessing.image_size
                inside = box_mask(boxes[start + k], (size, size), GROW)
                y, x = divmod(int(cell), int(w))
                ys, xs = slice(y * size // h, (y + 1) * size // h), slice(x * size // w, (x + 1) * size // w)
                hits.append(bool(inside[ys, xs].any()))
    return np.array(hits)


def by_map(prediction: Prediction) -> bool:
    """Answered "no tumour" by the tumour map (not by a gate that may lie beside the model)."""
    return prediction.predicted == NO_TUMOUR and prediction.extra.get("no_tumour_from") == "tumour_map"


def share(flags: np.ndarray, groups: list[str]) -> list[float]:
    return [round(100 * v, 1) for v in bootstrap_mean(flags.astype(float), groups)]


def held_out_fold_parser(description: str | None) -> argparse.ArgumentParser:
    """The arguments of a bench on one CV fold's held-out slices: a model, the CV's splits, the fold
    and the tumour dataset (shared with ``bench/engines_tumour_map.py``)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True, help="the tumour dataset (manifest with boxes)")
    return parser


def main() -> None:
    parser = held_out_fold_parser(__doc__)
    parser.add_argument("--no-tumour", type=Path, required=True, help="a collection of slices without a tumour")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    predictor = load_predictor(args.model, engine="pytorch")
    if not has_tumour_map(predictor.network) or predictor.evidence_record is None:
        raise SystemExit(f"{args.model}: has no tumour map (train it with --set train.tumour_map=...)")
    records = load_records(args.data)
    test = [i for i in load_split(args.split, args.fold).test if records[i].box is not None]
    names = predictor.class_names
    labels = np.array([names.index(records[i].label) for i in test])
    patients = [records[i].patient_id or records[i].path for i in test]
    images = [read_slice(records[i].path) for i in tqdm(test, desc="reading test slices", unit="img")]
    rows: dict[str, Any] = {}
    for style in (None, *STYLES):
        shown = images if style is None else [styled(im, style, args.seed + k) for k, im in enumerate(images)]
        preds = predict_slices(predictor, shown, progress=True, desc=style or "as is")
        none = np.array([by_map(p) for p in preds])
        right = np.array([p.predicted == names[y] for p, y in zip(preds, labels)])
        evidence = np.array([float(p.extra["tumour_evidence"]) for p in preds])
        rows[style or "as is"] = {
            "called_no_tumour": share(none, patients), "right": share(right, patients),
            "per_class_called_no_tumour": {c: round(100 * float(none[labels == k].mean()), 1)
                                           for k, c in enumerate(names)},
            "median_evidence": round(float(np.median(evidence)), 4), "evidence": evidence}
    evidence_clean = rows["as is"].pop("evidence")
    q05 = float(predictor.evidence_record.get("validation_evidence", {}).get("q05", float("nan")))
    erasers: dict[str, Any] = {"operating_points": {"deployed (1% quantile)": predictor.evidence_record["threshold"],
                                                    "5% quantile": q05}}
    boxes = [box for box in (records[i].box for i in test) if box is not None]  # every test slice has one
    for name, erase in ERASERS.items():
        erased = [erase(im, box, GROW) for im, box in zip(images, boxes)]
        preds = predict_slices(predictor, erased, progress=True, desc=name)
        evidence = np.array([float(p.extra["tumour_evidence"]) for p in preds])
        truth = np.r_[np.zeros(len(evidence)), np.ones(len(evidence_clean))]
        erasers[name] = {
            "auc_clean_vs_erased": round(float(roc_auc_score(truth, np.r_[evidence, evidence_clean])), 4),
            "set_aside_at": {point: {"erased": share(evidence < t, patients),
                                     "clean": share(evidence_clean < t, patients)}
                             for point, t in erasers["operating_points"].items()}}
    for v in rows.values():
        v.pop("evidence", None)
    pointing = strongest_cell_in_box(predictor, images, boxes)
    none_items = [item for item in read_collection(args.no_tumour) if item.label == "no_tumour"]
    none_images = [read_slice(item.path) for item in tqdm(none_items, desc="reading no-tumour slices", unit="img")]
    none_preds = predict_slices(predictor, none_images, progress=True, desc="no tumour")
    called = np.array([by_map(p) for p in none_preds])
    result = {
        "model": portable_path(args.model), "model_sha256": model_sha256(args.model), "fold": args.fold,
        "threshold": predictor.evidence_record["threshold"], "n_test": len(test), "seed": args.seed,
        "strongest_cell_in_box": share(pointing, patients),
        "strongest_cell_in_box_per_class": {c: round(100 * float(pointing[labels == k].mean()), 1)
                                            for k, c in enumerate(names)},
        "tumour_slices": rows, "erased": erasers,
        "no_tumour_collection": {"data": portable_path(args.no_tumour), "n": len(none_items),
                                 "called_no_tumour": share(called, [str(i.group) for i in none_items]),
                                 "median_evidence": round(float(np.median(
                                     [float(p.extra["tumour_evidence"]) for p in none_preds])), 4)},
        "compute": predictor.compute, "seconds": round(time.perf_counter() - started, 1),
        "machine": platform.processor() or platform.machine(),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    write_text(args.output / "tumour_map.json", json.dumps(result, indent=2) + "\n")
    write_text(args.output / "tumour_map.md", markdown(result, names))
    print(markdown(result, names))


def _cell(v: list[float]) -> str:
    return f"{v[0]:.1f} [{v[1]:.1f}, {v[2]:.1f}]"


def markdown(r: dict[str, Any], names: list[str]) -> str:
    lines = [f"# Tumour map of `{r['model']}` (CV fold {r['fold']})", "",
             f"\"No tumour\" below evidence {r['threshold']:.4f} (fitted on inner validation slices). "
             f"{r['n_test']} held-out tumour slices with a box; 95% CIs resample patients (no-tumour slices: "
             "near-duplicate groups). No style and no no-tumour slice was used in training.", "",
             f"Strongest cell inside the tumour's box grown by {GROW:.0%}: {_cell(r['strongest_cell_in_box'])}% ("
             + ", ".join(f"{c} {v}%" for c, v in r["strongest_cell_in_box_per_class"].items()) + ").", "",
             f"No-tumour collection ({r['no_tumour_collection']['n']} slices): "
             f"{_cell(r['no_tumour_collection']['called_no_tumour'])}% answered \"no tumour\" (median evidence "
             f"{r['no_tumour_collection']['median_evidence']}).", "",
             markdown_table(["tumour slices", "called no tumour %", *[f"{c} called no tumour %" for c in names],
                             "right %", "median evidence"],
                            [[style, _cell(v["called_no_tumour"]),
                              *[f"{v['per_class_called_no_tumour'][c]:.1f}" for c in names],
                              _cell(v["right"]), f"{v['median_evidence']:.3f}"]
                             for style, v in r["tumour_slices"].items()]), "",
             "With the tumour erased (box grown by 15%): ROC AUC of the evidence, unmodified against erased "
             "slices, and the share set aside (\"no tumour\") at two thresholds fitted on inner validation slices.",
             ""]
    points = list(r["erased"]["operating_points"])
    header = ["eraser", "AUC", *[f"{kind} set aside % at {p} ({r['erased']['operating_points'][p]:.3f})"
                                 for p in points for kind in ("erased", "unmodified")]]
    body = [[name, f"{v['auc_clean_vs_erased']:.3f}",
             *[_cell(v["set_aside_at"][p][kind]) for p in points for kind in ("erased", "clean")]]
            for name, v in r["erased"].items() if name != "operating_points"]
    lines += [markdown_table(header, body), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
