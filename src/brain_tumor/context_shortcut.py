"""The shortcut benchmark: what each model answers on held-out slices whose tumour is erased
(and, conversely, when only the tumour is left), per class, with CIs resampling patients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from brain_tumor.answers import NO_TUMOUR, Prediction
from brain_tumor.atomic import write_dict_csv, write_text
from brain_tumor.batched import predict_slices
from brain_tumor.config import portable_path
from brain_tumor.data.erasing import ERASERS, GROW, ISOLATORS, Box
from brain_tumor.data.imageio import read_slice
from brain_tumor.evaluation.report import markdown_table
from brain_tumor.evaluation.run_eval import write_json
from brain_tumor.evaluation.shortcut import answer_kinds
from brain_tumor.evaluation.statistics import bootstrap_mean
from brain_tumor.model_loading import load_predictor, model_sha256

METHODS = ("clean", *ERASERS, *ISOLATORS)
HELD_OUT_NOTE = ("Counterfactual training (`train.counterfactual`) erases with feathered ellipses or rectangles "
                 "filled with tissue grain or a patch of brain: `box_fill` and `tissue_patch` resemble it, "
                 "`inpaint` and `mirror` are never used in training (held-out erasers; `mirror` cannot erase a "
                 "tumour on the midline, as most pituitary ones are).")


def render_variants(images: list[np.ndarray], boxes: list[Box], grow: float = GROW) -> dict[str, list[np.ndarray]]:
    """Every slice under every method (``clean`` is the slice itself), the tumour's box grown by
    ``grow`` of its size on each side."""
    out: dict[str, list[np.ndarray]] = {"clean": images}
    for name, fn in {**ERASERS, **ISOLATORS}.items():
        out[name] = [fn(im, box, grow) for im, box in tqdm(list(zip(images, boxes)), desc=name, unit="img")]
    return out


def answer_shares(preds: list[Prediction], labels: np.ndarray, class_names: list[str]) -> dict[str, np.ndarray]:
    """Per slice, which kind of answer it got (same class, another tumour, no tumour, referred,
    set aside = no tumour or referred), as booleans."""
    predicted = np.array([class_names.index(p.predicted) if p.predicted in class_names else -1 for p in preds])
    kinds = answer_kinds(labels, predicted, np.array([p.refer for p in preds]),
                         np.array([p.predicted == NO_TUMOUR for p in preds]))
    kinds["set_aside"] = kinds["no_tumour"] | kinds["referred"]  # what an erased tumour should get
    return kinds


def summarise(answers: dict[str, list[Prediction]], labels: np.ndarray, groups: list[str],
              class_names: list[str]) -> dict[str, Any]:
    """Per method and true class: shares answered the same class / another tumour / no tumour /
    referred (mean and 95% CI resampling patients) and the mean confidence."""
    out: dict[str, Any] = {}
    for method, preds in answers.items():
        kinds = answer_shares(preds, labels, class_names)
        confidence = np.array([p.confidence for p in preds])
        per_class: dict[str, Any] = {}
        for k, name in enumerate(class_names):
            sel = labels == k
            g = [groups[i] for i in np.nonzero(sel)[0]]
            per_class[name] = {"n": int(sel.sum()), "mean_confidence": float(confidence[sel].mean()),
                               **{kind: bootstrap_mean(v[sel].astype(float), g) for kind, v in kinds.items()}}
        per_class["all"] = {"n": len(labels), "mean_confidence": float(confidence.mean()),
                            **{kind: bootstrap_mean(v.astype(float), groups) for kind, v in kinds.items()}}
        out[method] = per_class
    return out


def paired_same_class(answers: dict[str, list[Prediction]], reference: dict[str, list[Prediction]],
                      labels: np.ndarray, groups: list[str], class_names: list[str]) -> dict[str, Any]:
    """Per method and true class: the paired difference in the share still answered its own class,
    this model minus ``reference``, on the same slices (mean and 95% CI resampling patients)."""
    out: dict[str, Any] = {}
    for method, preds in answers.items():
        diff = (answer_shares(preds, labels, class_names)["same"].astype(float)
                - answer_shares(reference[method], labels, class_names)["same"].astype(float))
        out[method] = {name: bootstrap_mean(diff[labels == k], [groups[i] for i in np.nonzero(labels == k)[0]])
                       for k, name in enumerate(class_names)}
        out[method]["all"] = bootstrap_mean(diff, groups)
    return out


def _ci_cell(v: list[float]) -> str:
    return f"{100 * v[0]:.1f} [{100 * v[1]:.1f}, {100 * v[2]:.1f}]"


def shortcut_markdown(results: dict[str, Any], class_names: list[str], grow: float = GROW) -> str:
    lines = [f"The tumour's box is grown by {100 * grow:.0f}% of its size on each side before it is erased or "
             "isolated.\n"]
    columns = [*class_names, "all"]
    for model, r in results.items():
        lines.append(f"## {model}\n\nShare of held-out slices answered with their own tumour class (95% CI "
                     f"resampling patients); `clean` is accuracy on the unmodified slices. Referral: "
                     f"{r['referral']}. {HELD_OUT_NOTE}\n")
        rows = []
        for method, per_class in r["summary"].items():
            everyone = per_class["all"]
            rows.append([method, *[_ci_cell(per_class[c]["same"]) for c in columns],
                         f"{100 * everyone['no_tumour'][0]:.1f}", f"{100 * everyone['referred'][0]:.1f}",
                         f"{everyone['mean_confidence']:.2f}"])
        lines.append(markdown_table(["method", *[f"{c} same class %" for c in columns], "no tumour %",
                                     "referred %", "mean confidence"], rows))
        lines.append("\nShare set aside, answered \"no tumour\" or referred (95% CI resampling patients): what a "
                     "slice without its tumour should get.\n")
        aside = []
        for method, per_class in r["summary"].items():
            aside.append([method, *[_ci_cell(per_class[c]["set_aside"]) for c in columns]])
        lines.append(markdown_table(["method", *[f"{c} set aside %" for c in columns]], aside))
        if "paired_vs" in r:
            lines.append(f"\nPaired against `{r['paired_vs']}` on the same slices: difference in the share still "
                         "answered its own class, points (95% CI resampling patients; negative: fewer answered from "
                         "what is left when the tumour is gone).\n")
            lines.append(markdown_table(["method", *[f"{c} same class, points" for c in columns]],
                                        [[method, *[_points(d[c]) for c in columns]]
                                         for method, d in r["paired_same_class"].items()]))
        lines.append("")
    return "\n".join(lines) + "\n"


def _points(v: list[float]) -> str:
    return f"{100 * v[0]:+.1f} [{100 * v[1]:+.1f}, {100 * v[2]:+.1f}]"


def run_shortcut_test(checkpoints: dict[str, Path], paths: list[str], labels: np.ndarray, boxes: list[Box],
                      groups: list[str], class_names: list[str], out_dir: Path, calibration: Path | None = None,
                      gate: Path | None = None, names: list[str] | None = None, grow: float = GROW) -> dict[str, Any]:
    """The benchmark for each checkpoint (with ``calibration``/``gate`` applied to each, default the
    files beside it), erasing or isolating the box grown by ``grow``; writes shortcut.json/.md and
    every slice's answer (``shortcut_predictions.csv``, slices named by ``names``, default their paths)."""
    images = [read_slice(p) for p in tqdm(paths, desc="reading test slices", unit="img")]
    variants = render_variants(images, boxes, grow)
    results: dict[str, Any] = {}
    first: tuple[str, dict[str, list[Prediction]]] | None = None
    rows: list[dict[str, Any]] = [{"path": p, "label": class_names[y]} for p, y in zip(names or paths, labels)]
    for name, checkpoint in checkpoints.items():
        predictor = load_predictor(checkpoint, calibration=calibration, gate=gate)
        answers = {m: predict_slices(predictor, ims) for m, ims in tqdm(variants.items(), desc=name, unit="method")}
        referral = ("confidence threshold" + (f" from {predictor.calibration_source}" if predictor.calibration_source
                                              else " stored in the checkpoint")
                    if predictor.refer_threshold is not None else "no confidence threshold") + \
                   (", OOD flag" if predictor.ood is not None else ", no OOD flag") + \
                   (f", no-tumour gate {predictor.compute.get('gate')}" if predictor.gate is not None else
                    ", no no-tumour gate") + \
                   (f", tumour map (\"no tumour\" below evidence {predictor.evidence_record['threshold']:.4f})"
                    if predictor.evidence_record is not None else "")
        results[name] = {"checkpoint": portable_path(checkpoint), "model_sha256": model_sha256(checkpoint),
                         "referral": referral, "compute": predictor.compute,
                         "summary": summarise(answers, labels, groups, class_names)}
        if first is None:
            first = (name, answers)
        else:  # every later model paired with the first on the same slices
            results[name].update(paired_vs=first[0], paired_same_class=paired_same_class(
                answers, first[1], labels, groups, class_names))
        for method, preds in answers.items():
            for row, p in zip(rows, preds):
                row[f"{name}/{method}"] = f"{p.predicted}:{p.confidence:.3f}" + (":refer" if p.refer else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json({"n": len(paths), "methods": list(METHODS), "grow": grow, "models": results},
               out_dir / "shortcut.json")
    write_text(out_dir / "shortcut.md", shortcut_markdown(results, class_names, grow))
    write_dict_csv(out_dir / "shortcut_predictions.csv", rows)
    draw_examples(variants, labels, class_names, out_dir / "shortcut_examples.png")
    return results


def draw_examples(variants: dict[str, list[np.ndarray]], labels: np.ndarray, class_names: list[str],
                  out: Path) -> Path:
    """One slice per class under every method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = [int(np.nonzero(labels == k)[0][0]) for k in range(len(class_names)) if (labels == k).any()]
    fig, axes = plt.subplots(len(picks), len(variants), figsize=(2.2 * len(variants), 2.3 * len(picks)),
                             squeeze=False)
    for r, i in enumerate(picks):
        for c, (method, ims) in enumerate(variants.items()):
            axes[r][c].imshow(ims[i], cmap="gray", vmin=0, vmax=1)
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            if r == 0:
                axes[r][c].set_title(method, fontsize=9)
            if c == 0:
                axes[r][c].set_ylabel(class_names[int(labels[i])], fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
