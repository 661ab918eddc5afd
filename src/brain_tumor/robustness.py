"""Shift benchmark and out-of-distribution flagging over trained checkpoints."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from brain_tumor.atomic import write_csv, write_text
from brain_tumor.batched import embeddings_for, slice_logits
from brain_tumor.config import portable_path
from brain_tumor.data.imageio import read_slice
from brain_tumor.data.preprocess import head_box, prepare_slice, robust_slice
from brain_tumor.evaluation.plots import plot_shift, plot_steps
from brain_tumor.evaluation.report import markdown_table
from brain_tumor.evaluation.run_eval import write_json
from brain_tumor.evaluation.shift import SHIFTS, shifted
from brain_tumor.evaluation.statistics import bootstrap_mean
from brain_tumor.inference import Predictor

ADAPTED = "+bn-adapted"  # the suffix of a model scored with its BatchNorm statistics adapted to each set


def predict_on(predictor: Predictor, images: list[np.ndarray], batch: int = 64) -> np.ndarray:
    """Predicted class of ``predictor`` for each float [0, 1] slice (its own preprocessing applied)."""
    predicted: np.ndarray = slice_logits(predictor, images, batch).argmax(1)
    return predicted


def shift_statistics(predictions: dict[str, dict[str, np.ndarray]], labels: np.ndarray,
                     groups: list[str]) -> dict[str, Any]:
    """Per model, the accuracy lost per shift family (clean minus the mean over severities) with a
    95% CI resampling patients; and for every model after the first, the paired difference of its
    loss from the first model's (negative: it loses less); for each BatchNorm-adapted variant, the
    paired difference from the same model unadapted (``adapted_vs_own``)."""
    def losses(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        clean = (columns["clean"] == labels).astype(float)
        families = dict.fromkeys(key.split("/")[0] for key in columns if key != "clean")
        return {f: clean - np.mean([(columns[k] == labels) for k in columns if k.split("/")[0] == f], axis=0)
                for f in families}

    per_slice = {model: losses(columns) for model, columns in predictions.items()}
    reference = next(iter(per_slice))
    out: dict[str, Any] = {"drop": {}, "drop_vs_" + reference: {}}
    for model, by_family in per_slice.items():
        out["drop"][model] = {f: bootstrap_mean(v, groups) for f, v in by_family.items()}
        if model != reference:
            out["drop_vs_" + reference][model] = {
                f: bootstrap_mean(v - per_slice[reference][f], groups) for f, v in by_family.items()}
        own = model.removesuffix(ADAPTED)
        if model.endswith(ADAPTED) and own in per_slice:  # adaptation against the same model without it
            out.setdefault("adapted_vs_own", {})[model] = {
                f: bootstrap_mean(v - per_slice[own][f], groups) for f, v in by_family.items()}
    return out


def predict_adapted(predictor: Predictor, images: list[np.ndarray], prior: float) -> np.ndarray:
    """Predicted classes after the network's BatchNorm statistics are re-estimated on ``images``
    themselves (test-time adaptation to their source; no labels used)."""
    from brain_tumor.bn_adaptation import adapted_predictor

    tensors = torch.stack([predictor.to_tensor(im) for im in images])
    return predict_on(adapted_predictor(predictor, tensors, prior), images)


def run_shift_test(checkpoints: dict[str, Path], paths: list[str], labels: np.ndarray, groups: list[str],
                   out_dir: Path, seed: int = 0, names: list[str] | None = None,
                   bn_prior: float | None = None, families: list[str] | None = None) -> dict[str, Any]:
    """Accuracy of each checkpoint on the slices at ``paths`` under every shift and severity, the
    per-slice predictions (``shift_predictions.csv``, slices named by ``names``, default their
    paths) and patient-bootstrap CIs of each loss. With ``bn_prior`` set, each checkpoint is also
    scored with its BatchNorm statistics adapted to each set of slices (``NAME+bn-adapted``),
    keeping that share of the training statistics. ``families`` limits the shifts (default: all)."""
    unknown = sorted(set(families or []) - set(SHIFTS))
    if unknown:
        raise ValueError(f"unknown shift families {unknown} (known: {', '.join(SHIFTS)})")
    chosen = {f: levels for f, levels in SHIFTS.items() if not families or f in families}
    originals = [read_slice(p) for p in tqdm(paths, desc="reading test slices", unit="img")]
    results: dict[str, Any] = {}
    predictions: dict[str, dict[str, np.ndarray]] = {}
    for name, checkpoint in checkpoints.items():
        base = Predictor.from_checkpoint(checkpoint)
        variants = [(name, None)] + ([(name + ADAPTED, bn_prior)] if bn_prior is not None else [])
        for variant, prior in variants:
            predict: Callable[[list[np.ndarray]], np.ndarray] = (
                functools.partial(predict_on, base) if prior is None
                else functools.partial(predict_adapted, base, prior=prior))
            columns = {"clean": predict(originals)}
            entry: dict[str, Any] = {"checkpoint": portable_path(checkpoint), "pipeline": base.preprocessing.pipeline,
                                     "bn_adapted": prior is not None, "bn_prior": prior,
                                     "clean": float((columns["clean"] == labels).mean()), "shifts": {}}
            for family, levels in tqdm(chosen.items(), desc=f"shifts ({variant})", unit="family"):
                entry["shifts"][family] = []
                for k, (label, _) in enumerate(levels):
                    images = [shifted(im, family, k, seed + i) for i, im in enumerate(originals)]
                    columns[f"{family}/{label}"] = predict(images)
                    entry["shifts"][family].append((label, float((columns[f"{family}/{label}"] == labels).mean())))
            entry["mean_drop"] = {f: entry["clean"] - float(np.mean([a for _, a in lv]))
                                  for f, lv in entry["shifts"].items()}
            results[variant], predictions[variant] = entry, columns
    statistics = shift_statistics(predictions, labels, groups)
    write_json({"n_test": len(paths), "n_patients": len(set(groups)), "seed": seed, "models": results,
                "statistics": statistics}, out_dir / "shift.json")
    write_shift_predictions(predictions, names or paths, labels, groups, out_dir / "shift_predictions.csv")
    plot_shift(results, out_dir / "shift.png")
    write_text(out_dir / "shift.md", shift_markdown(results, len(paths), statistics))
    return results


def write_shift_predictions(predictions: dict[str, dict[str, np.ndarray]], paths: list[str], labels: np.ndarray,
                      groups: list[str], path: Path) -> None:
    """One row per test slice: its label, patient and each model's predicted class under each shift."""
    keys = [(model, key) for model, columns in predictions.items() for key in columns]
    write_csv(path, ["path", "patient_id", "label", *(f"{m}/{k}" for m, k in keys)],
              ([p, g, int(y), *(int(predictions[m][k][i]) for m, k in keys)]
               for i, (p, g, y) in enumerate(zip(paths, groups, labels))))


def _ci(point_low_high: list[float] | tuple[float, float, float]) -> str:
    point, low, high = point_low_high
    return f"{point:+.3f} [{low:+.3f}, {high:+.3f}]"


def shift_markdown(results: dict[str, Any], n: int, statistics: dict[str, Any] | None = None) -> str:
    """Accuracy per shift family and severity, a column per model; then the loss per family, with
    patient-bootstrap CIs and the paired difference from the first model when ``statistics`` is given."""
    models = list(results)
    lines = [f"# Shift benchmark ({n} held-out test slices)", "",
             "| shift | severity | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models),
             "| none | - | " + " | ".join(f"{results[m]['clean']:.3f}" for m in models) + " |"]
    for family, levels in results[models[0]]["shifts"].items():
        for k, (label, _) in enumerate(levels):
            lines.append(f"| {family} | {label} | " + " | ".join(
                f"{results[m]['shifts'][family][k][1]:.3f}" for m in models) + " |")
    families = list(results[models[0]]["shifts"])
    if statistics is None:
        lines += ["", "Mean accuracy lost per family (clean minus mean over severities):", "",
                  "| shift | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
        for family in families:
            lines.append(f"| {family} | " + " | ".join(f"{results[m]['mean_drop'][family]:+.3f}" for m in models)
                         + " |")
        return "\n".join(lines) + "\n"
    paired_key = "drop_vs_" + models[0]
    others = list(statistics[paired_key])
    lines += ["", "Mean accuracy lost per family (clean minus mean over severities), 95% CI resampling "
              f"patients; the last column{'s' if len(others) > 1 else ''}: paired difference of the loss from "
              f"{models[0]}'s (negative: loses less):", "",
              markdown_table(["shift", *(f"{m} loss" for m in models), *(f"{m} − {models[0]}" for m in others)],
                             [[family, *(_ci(statistics["drop"][m][family]) for m in models),
                               *(_ci(statistics[paired_key][m][family]) for m in others)] for family in families])]
    adapted = statistics.get("adapted_vs_own", {})
    if adapted:
        lines += ["", "Test-time BatchNorm adaptation (statistics re-estimated on each set of slices, no labels): "
                  "paired difference of each adapted model's loss from the same model's unadapted loss, 95% CI "
                  "resampling patients (negative: adaptation loses less):", "",
                  markdown_table(["shift", *adapted], [[family, *(_ci(adapted[m][family]) for m in adapted)]
                                                       for family in families])]
    return "\n".join(lines) + "\n"


def draw_preprocessing_steps(paths: list[str], out: Path, size: int = 224) -> Path:
    """Each step of the robust pipeline on real slices, beside the paper's plain resize."""
    rows = []
    for p in paths:
        image = read_slice(p)
        y0, y1, x0, x1 = head_box(image)
        boxed = image.copy()
        boxed[y0:y1, [x0, min(x1, image.shape[1] - 1)]] = 1.0
        boxed[[y0, min(y1, image.shape[0] - 1)], x0:x1] = 1.0
        rows.append([image, prepare_slice(image, size, "paper"), boxed, robust_slice(image),
                     prepare_slice(image, size, "robust")])
    return plot_steps(rows, ["as read", "paper: resize", "robust: head box", "cropped, padded, clipped",
                             f"robust: {size}px"], out)


def ood_scores(predictor: Predictor, images: torch.Tensor, train: list[int], parts: dict[str, list[int]],
               k: int = 10) -> tuple[torch.Tensor, dict[str, dict[str, np.ndarray]]]:
    """The kNN bank of the training slices' features, and the kNN and energy scores of each named
    part of ``images`` and of each kind of image in the refuse set."""
    from brain_tumor.evaluation.ood import energy_scores, knn_scores, make_bank, refuse_set

    bank = make_bank(embeddings_for(predictor, images[train], progress=True)[0])
    batches = {name: images[idx] for name, idx in parts.items()}
    batches.update({kind: torch.stack([predictor.to_tensor(p) for p in pictures])
                    for kind, pictures in refuse_set().items()})
    scores: dict[str, dict[str, np.ndarray]] = {}
    for name, batch in batches.items():
        f, z = embeddings_for(predictor, batch, progress=True)
        scores[name] = {"knn": knn_scores(bank, f, k).numpy(), "energy": energy_scores(z).numpy()}
    return bank, scores


def fit_ood(checkpoint: Path, images: torch.Tensor, train: list[int], val: list[int], test: list[int],
            out_dir: Path, flag_rate: float = 0.05, k: int = 10) -> dict[str, Any]:
    """Fit the kNN OOD detector on training features, set its threshold on validation, store it
    beside the checkpoint (``ood_bank.safetensors``; the checkpoint is not rewritten), and measure
    flag rates on the test slices and on images it must refuse."""
    from brain_tumor.evaluation.ood import threshold_for_rate
    from brain_tumor.training.checkpoint import write_ood_companion

    bank, scores = ood_scores(Predictor.from_checkpoint(checkpoint), images, train, {"val": val, "test": test}, k)
    thresholds = {m: threshold_for_rate(scores["val"][m], flag_rate) for m in ("knn", "energy")}
    rates = {m: {name: float((s[m] > thresholds[m]).mean()) for name, s in scores.items()} for m in thresholds}
    refuse_kinds = [n for n in scores if n not in ("val", "test")]
    for m in rates:
        refused = np.concatenate([scores[n][m] for n in refuse_kinds])
        rates[m]["all_must_refuse"] = float((refused > thresholds[m]).mean())
    write_ood_companion(checkpoint, bank, method="knn-cosine", k=k, threshold=thresholds["knn"],
                        flag_rate=flag_rate, fitted_on="validation slices")
    result = {"checkpoint": portable_path(checkpoint), "k": k, "bank_size": len(bank),
              "target_flag_rate_val": flag_rate,
              "thresholds": thresholds, "flag_rates": rates,
              "counts": {n: len(s["knn"]) for n, s in scores.items()}}
    write_json(result, out_dir / "ood.json")
    write_text(out_dir / "ood.md", ood_markdown(result))
    return result


def ood_markdown(result: dict[str, Any]) -> str:
    """Flag rates per input kind, kNN feature distance beside the energy baseline."""
    rates, counts = result["flag_rates"], result["counts"]
    lines = [f"# Out-of-distribution flag (threshold: {result['target_flag_rate_val']:.0%} of validation flagged)", "",
             "| inputs | n | kNN feature distance | energy (baseline) |", "|---|---|---|---|"]
    for name in rates["knn"]:
        n = counts.get(name, sum(counts[k] for k in counts if k not in ("val", "test")))
        lines.append(f"| {name} | {n} | {rates['knn'][name]:.1%} | {rates['energy'][name]:.1%} |")
    return "\n".join(lines) + "\n"


def robustness_overview(root: Path) -> tuple[str, str]:
    """Markdown and HTML of every shift benchmark and OOD result under ``root`` (figures embedded)."""
    import html

    from brain_tumor.evaluation.report import _img

    md, parts = [], []
    for shift_md in sorted(root.glob("*/shift.md")):
        folder = shift_md.parent
        body = shift_md.read_text().split("\n", 1)[1]
        oods = sorted(folder.glob("ood-*/ood.md"))
        md += [f"## Robustness: {folder.name}", body, *[o.read_text().replace("# ", f"### {o.parent.name}: ", 1)
                                                       for o in oods]]
        parts.append(f"<h2>Robustness: {html.escape(folder.name)}</h2><pre>{html.escape(body)}</pre>"
                     + "".join(f"<h3>{html.escape(o.parent.name)}</h3><pre>{html.escape(o.read_text())}</pre>"
                               for o in oods)
                     + "".join(_img(p) for p in (folder / "preprocessing_steps.png", folder / "shift.png")
                               if p.is_file()))
    return "\n\n".join(md), "\n".join(parts)
