"""Does flip test-time augmentation (``--tta flip``) help? Each CV fold model answers its own
held-out fold twice through the one inference path (``load_predictor``): as is, and with the
mean of the logits of each slice and its mirror. Same model, same slices: the paired difference
in accuracy and meningioma recall, with 95% CIs resampling patients, McNemar's test, and the
log-loss and ECE of the raw (uncalibrated) probabilities. The cost: two forward passes a slice.

Writes ``tta.json`` and ``tta.md`` to ``--out``.

Example:
    python bench/tta.py results/cv/NAME -m 3=runs/cv/NAME/fold-3/model.pt -m 4=runs/cv/NAME/fold-4/model.pt \
        --out results/tta/NAME
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from brain_tumor.atomic import write_json, write_text
from brain_tumor.config import portable_path
from brain_tumor.data.manifest import CLASS_NAMES
from brain_tumor.data.splits import load_split
from brain_tumor.environment import describe_environment
from brain_tumor.evaluation import statistics as st
from brain_tumor.evaluation.calibration import expected_calibration_error, negative_log_likelihood
from brain_tumor.evaluation.report import markdown_table
from brain_tumor.model_loading import load_predictor, model_sha256
from brain_tumor.training.fit import load_data


def fold_logits(checkpoint: Path, images: torch.Tensor, precision: str, batch_size: int = 32) -> dict[str, Any]:
    """Logits of every image without and with flip TTA, and the seconds each took."""
    out: dict[str, Any] = {}
    for mode in ("none", "flip"):
        predictor = load_predictor(checkpoint, precision=precision, engine="pytorch", tta=mode)
        start = time.perf_counter()
        out[mode] = predictor.logits_for(images, batch_size)
        out[f"{mode}_seconds"] = time.perf_counter() - start
    out["compute"] = predictor.compute
    return out


def compare(y: np.ndarray, p_none: np.ndarray, p_flip: np.ndarray, groups: list[str]) -> dict[str, Any]:
    """TTA (A) against none (B) on the same slices."""
    meningioma = CLASS_NAMES.index("meningioma")
    out: dict[str, Any] = {"n": len(y), "n_patients": len(set(groups))}
    for name, p in (("none", p_none), ("flip", p_flip)):
        out[name] = {"accuracy": st.accuracy(y, p), "meningioma_recall": st.class_recall(meningioma)(y, p),
                     "macro_f1": st.macro_f1(y, p), "log_loss": negative_log_likelihood(p, y),
                     "ece": expected_calibration_error(p, y)}
    for name, fn in (("accuracy", st.accuracy), ("meningioma_recall", st.class_recall(meningioma))):
        point, low, high = st.paired_bootstrap_difference(fn, y, p_flip, p_none, groups)
        out[f"{name}_difference_95ci_by_patient"] = {"value": point, "low": low, "high": high}
    out["mcnemar_flip_vs_none"] = st.mcnemar(p_flip.argmax(1) == y, p_none.argmax(1) == y)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cv_dir", type=Path, help="a `brain-tumor cv` results folder (config.yaml, splits.json)")
    parser.add_argument("-m", "--model", action="append", required=True, help="FOLD=CHECKPOINT, repeatable")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--precision", default="fp32", help="as the CV's own evaluation: fp32")
    args = parser.parse_args()

    config = yaml.safe_load((args.cv_dir / "config.yaml").read_text())
    data = config["data"]
    records, images, labels = load_data(data["root"], int(data["image_size"]), data.get("cache_dir"),
                                        data.get("preprocessing", "paper"))
    folds: dict[str, Any] = {}
    pooled: dict[str, list[Any]] = {"y": [], "none": [], "flip": [], "groups": []}
    for item in args.model:
        fold_text, _, path = item.partition("=")
        fold, checkpoint = int(fold_text), Path(path)
        test = load_split(args.cv_dir / "splits.json", fold).test
        y = labels[test].numpy()
        groups = [records[i].patient_id or records[i].result_name for i in test]
        logits = fold_logits(checkpoint, images[test], args.precision)
        p_none = torch.from_numpy(logits["none"]).softmax(1).numpy()
        p_flip = torch.from_numpy(logits["flip"]).softmax(1).numpy()
        folds[str(fold)] = {"checkpoint": portable_path(checkpoint), "model_sha256": model_sha256(checkpoint),
                            "seconds": {"none": logits["none_seconds"], "flip": logits["flip_seconds"]},
                            "compute": logits["compute"], **compare(y, p_none, p_flip, groups)}
        for key, value in (("y", y), ("none", p_none), ("flip", p_flip)):
            pooled[key].append(value)
        pooled["groups"] += groups
        print(f"fold {fold}: accuracy {folds[str(fold)]['none']['accuracy']:.4f} -> "
              f"{folds[str(fold)]['flip']['accuracy']:.4f}", flush=True)
    result = {"cv": portable_path(args.cv_dir), "precision": args.precision, "folds": folds,
              "pooled": compare(np.concatenate(pooled["y"]), np.concatenate(pooled["none"]),
                                np.concatenate(pooled["flip"]), pooled["groups"]),
              "environment": describe_environment()}
    write_json(result, args.out / "tta.json")
    write_text(args.out / "tta.md", markdown(result))
    print(f"-> {args.out / 'tta.md'}")


def markdown(result: dict[str, Any]) -> str:
    def row(name: str, r: dict[str, Any]) -> list[str]:
        d = r["accuracy_difference_95ci_by_patient"]
        m = r["meningioma_recall_difference_95ci_by_patient"]
        return [name, str(r["n"]), f"{100 * r['none']['accuracy']:.2f}", f"{100 * r['flip']['accuracy']:.2f}",
                f"{100 * d['value']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]",
                f"{100 * m['value']:+.2f} [{100 * m['low']:+.2f}, {100 * m['high']:+.2f}]",
                f"{r['mcnemar_flip_vs_none']['p_value']:.3g}",
                f"{r['none']['log_loss']:.4f} -> {r['flip']['log_loss']:.4f}",
                f"{r['none']['ece']:.4f} -> {r['flip']['ece']:.4f}"]

    rows = [row(f"fold {k}", v) for k, v in result["folds"].items()] + [row("pooled", result["pooled"])]
    return "\n".join([
        "# Flip test-time augmentation on held-out CV folds", "",
        f"CV `{result['cv']}`; each fold's own model on its own held-out patients, {result['precision']}. "
        "Differences are flip minus none, in points, with 95% CIs resampling patients; log-loss and ECE "
        "of the uncalibrated probabilities. Written by `bench/tta.py`.", "",
        markdown_table(["", "slices", "accuracy none %", "accuracy flip %", "accuracy difference",
                        "meningioma recall difference", "McNemar p", "log-loss", "ECE"], rows), ""])


if __name__ == "__main__":
    main()
