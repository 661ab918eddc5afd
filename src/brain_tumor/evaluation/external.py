"""Evaluation on any labelled collection (another hospital, another public set): tumour images
scored as usual, images without a tumour or out of scope followed one by one (refused, or called
a tumour, and how confidently)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brain_tumor.answers import Prediction, failed, out_of_scope
from brain_tumor.batched import iter_predictions
from brain_tumor.data.imageio import SUPPORTED_SUFFIXES, ImageReadError, read_slice
from brain_tumor.data.manifest import canonical_label
from brain_tumor.evaluation import statistics as st
from brain_tumor.evaluation.calibration import risk_coverage
from brain_tumor.evaluation.metrics import classification_metrics
from brain_tumor.evaluation.plots import plot_image_grid
from brain_tumor.inference import Predictor

NO_TUMOUR = "no_tumour"
NO_TUMOUR_NAMES = {"no_tumour", "no_tumor", "notumour", "notumor", "no tumour", "no tumor", "normal", "healthy",
                   "no"}


class CollectionError(ValueError):
    """A collection that cannot be read; the message is one line."""


@dataclass(frozen=True)
class Item:
    path: Path
    label: str  # a tumour class, or no_tumour
    group: str  # patient id where known, else the file


def collection_label(name: str) -> str | None:
    """A folder or CSV label as a tumour class or ``no_tumour`` (case and separators ignored)."""
    key = name.strip().lower().replace("-", "_")
    if key in NO_TUMOUR_NAMES or key.replace("_", " ") in NO_TUMOUR_NAMES:
        return NO_TUMOUR
    return canonical_label(key)


def _from_rows(rows: list[dict[str, str]], base: Path, source: Path) -> list[Item]:
    if not rows or "path" not in rows[0] or "label" not in rows[0]:
        raise CollectionError(f"{source}: needs the columns path,label")
    unknown = sorted({r["label"] for r in rows if collection_label(r["label"]) is None})
    if unknown:
        raise CollectionError(f"{source}: unknown labels {unknown} (glioma, meningioma, pituitary, no_tumour)")
    return [Item(base / r["path"], str(collection_label(r["label"])),
                 r.get("patient_id") or r.get("group") or r["path"]) for r in rows]


def read_collection(source: str | Path) -> list[Item]:
    """A CSV of ``path,label`` (paths relative to it), a folder with ``manifest.csv``, or a
    class-per-folder tree (``glioma_tumor/``, ``no_tumor/``, ``normal/``, ...)."""

    source = Path(source)
    if source.is_file():
        with source.open(newline="") as fh:
            return _from_rows(list(csv.DictReader(fh)), source.parent, source)
    if not source.is_dir():
        raise CollectionError(f"{source}: no such file or folder")
    if (source / "manifest.csv").is_file():
        with (source / "manifest.csv").open(newline="") as fh:
            return _from_rows(list(csv.DictReader(fh)), source, source / "manifest.csv")
    items, unknown = [], set()
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in SUPPORTED_SUFFIXES:
            continue
        folder = path.relative_to(source).parts[0] if len(path.relative_to(source).parts) > 1 else ""
        label = collection_label(folder) if folder else None
        if label is None:
            unknown.add(folder or "(top level)")
            continue
        items.append(Item(path, label, str(path)))
    if unknown:
        raise CollectionError(f"{source}: folders with unknown labels {sorted(unknown)} "
                              "(glioma, meningioma, pituitary, no_tumour)")
    if not items:
        raise CollectionError(f"{source}: no images found")
    return items


def summarise_collection(items: list[Item], answers: list[Prediction], class_names: list[str],
                         n_boot: int = 1000) -> dict[str, Any]:
    """Metrics on tumour images (CIs resampling groups), risk-coverage, and what happened to each
    image without a tumour."""
    refused_scope = [("out_of_scope" in a.extra) for a in answers]
    out: dict[str, Any] = {"n_images": len(items),
                           "n_unreadable": sum(bool(a.error) and not r for a, r in zip(answers, refused_scope)),
                           "n_out_of_scope": sum(refused_scope)}
    tumour = [(i, a) for i, a in zip(items, answers) if i.label != NO_TUMOUR and not a.error]
    tumour_refused = sum(r for i, r in zip(items, refused_scope) if i.label != NO_TUMOUR)
    out["tumour_refused_as_out_of_scope"] = tumour_refused
    if tumour:
        y = np.array([class_names.index(i.label) for i, _ in tumour])
        probs = np.array([[a.probabilities[c] for c in class_names] for _, a in tumour])
        groups = [i.group for i, _ in tumour]
        out["tumour"] = {"n": len(tumour), "metrics": classification_metrics(y, probs, class_names),
                         "accuracy_95ci": st.bootstrap_ci(st.accuracy, y, probs, groups, n_boot)}
        confidence = np.array([a.confidence for _, a in tumour])
        gated_out = np.array([a.predicted == NO_TUMOUR for _, a in tumour])  # the gate saw no tumour: wrong
        correct = (probs.argmax(1) == y) & ~gated_out
        out["tumour"]["called_no_tumour"] = float(gated_out.mean())
        out["tumour"]["accuracy_with_no_tumour_answers"] = float(correct.mean())
        answered = ~np.array([a.refer for _, a in tumour])
        # a tumour image refused as out of scope was not answered either
        out["tumour"]["answered_share"] = float(answered.sum() / (len(tumour) + tumour_refused))
        out["tumour"]["accuracy_among_answered"] = float(correct[answered].mean()) if answered.any() else None
        _, coverage, risk = risk_coverage(confidence, correct)
        out["risk_coverage"] = {"coverage": coverage.tolist(), "risk": risk.tolist()}
    # a healthy brain refused as out of scope was refused: what an image without a tumour may get
    healthy = [(i, a) for i, a, r in zip(items, answers, refused_scope) if i.label == NO_TUMOUR and (not a.error or r)]
    if healthy:
        refused = np.array([a.refer for _, a in healthy])
        none = np.array([a.predicted == NO_TUMOUR for _, a in healthy]) & ~refused
        tumour_called = ~refused & ~none
        sure = tumour_called & (np.array([a.confidence for _, a in healthy]) > 0.9)
        gated = any("p_no_tumour" in a.extra for _, a in healthy)
        mapped = any("tumour_evidence" in a.extra for _, a in healthy)
        out["no_tumour"] = {"n": len(healthy), "refused": float(refused.mean()),
                            "refused_as_out_of_scope": float(np.mean(["out_of_scope" in a.extra for _, a in healthy])),
                            "called_no_tumour": float(none.mean()),
                            "called_a_tumour": float(tumour_called.mean()),
                            "called_a_tumour_with_confidence_over_0.9": float(sure.mean()),
                            "called": {c: float(np.mean([a.predicted == c for _, a in healthy])) for c in class_names},
                            "no_tumour_answer": " and ".join(
                                [n for n, on in (("the no-tumour gate", gated), ("the tumour map", mapped)) if on])
                            or "none: the model knows only the three tumour classes"}
    return out


def outcome_rows(items: list[Item], answers: list[Prediction]) -> list[dict[str, Any]]:
    """One row per image: label, answer, confidence, and its outcome."""
    rows = []
    for item, a in zip(items, answers):
        if "out_of_scope" in a.extra:
            outcome = "refused: out of scope"
        elif a.error:
            outcome = "unreadable"
        elif a.refer:
            outcome = "refused"
        elif item.label == NO_TUMOUR:
            outcome = "called no tumour" if a.predicted == NO_TUMOUR else "called a tumour"
        elif a.predicted == NO_TUMOUR:
            outcome = "called no tumour"
        else:
            outcome = "right" if a.predicted == item.label else "wrong"
        rows.append({"path": str(item.path), "label": item.label, "predicted": a.predicted,
                     "confidence": round(a.confidence, 4), "outcome": outcome, "error": a.error or ""})
    return rows


def collection_markdown(summary: dict[str, Any]) -> str:
    lines = [f"# External evaluation\n\n{summary['n_images']} images, {summary['n_unreadable']} unreadable, "
             f"{summary.get('n_out_of_scope', 0)} refused as out of scope (not MRI slices of a head, by "
             f"`brain_tumor.scope`; {summary.get('tumour_refused_as_out_of_scope', 0)} of them tumour images, counted "
             "as not answered).\n"]
    t = summary.get("tumour")
    if t:
        point, low, high = t["accuracy_95ci"]
        recall = ", ".join(f"{c} {v:.3f}" for c, v in t["metrics"]["recall"].items())
        answered = t["accuracy_among_answered"]
        lines.append(f"Tumour images: {t['n']}; accuracy {100 * point:.1f}% [{100 * low:.1f}, {100 * high:.1f}] "
                     f"(95% CI resampling patients or images); recall {recall}; answered "
                     f"{100 * t['answered_share']:.1f}%, accuracy among answered "
                     f"{'-' if answered is None else f'{100 * answered:.1f}%'}; called no tumour "
                     f"{100 * t['called_no_tumour']:.1f}% (accuracy counting those wrong "
                     f"{100 * t['accuracy_with_no_tumour_answers']:.1f}%).\n")
    h = summary.get("no_tumour")
    if h:
        called = ", ".join(f"{c} {100 * v:.1f}%" for c, v in h["called"].items())
        lines.append(f"Images without a tumour: {h['n']}; refused {100 * h['refused']:.1f}% (of which out of scope "
                     f"{100 * h.get('refused_as_out_of_scope', 0.0):.1f}%), called no tumour "
                     f"{100 * h.get('called_no_tumour', 0.0):.1f}%, called a tumour "
                     f"{100 * h['called_a_tumour']:.1f}% ({100 * h['called_a_tumour_with_confidence_over_0.9']:.1f}% "
                     f"with confidence over 0.9; {called}). {h['no_tumour_answer']}.\n")
    return "\n".join(lines)


def predict_items(predictor: Predictor, items: list[Item], batch: int = 32) -> list[Prediction]:
    """One answer per item, in order; an unreadable file is a failed answer, not a stop, and an
    image that is plainly not an MRI slice an out-of-scope one (with ``predictor.scope_check``).
    The files are read as the model needs them, a batch of in-scope slices at a time."""
    answers: list[Prediction | None] = [None] * len(items)
    sent: list[int] = []  # the items given to the model, in order

    def in_scope() -> Iterator[tuple[str, np.ndarray]]:
        for k, item in enumerate(items):
            try:
                image = read_slice(item.path)
            except ImageReadError as exc:
                answers[k] = failed(str(item.path), str(exc))
                continue
            if (reason := predictor.out_of_scope_reason(item.path, image)) is not None:
                answers[k] = out_of_scope(str(item.path), reason)
            else:
                sent.append(k)
                yield str(item.path), image

    predictions = list(iter_predictions(predictor, in_scope(), batch))  # reads every item
    for k, prediction in zip(sent, predictions, strict=True):
        answers[k] = prediction
    return [a for a in answers if a is not None]


def draw_collection_figures(items: list[Item], answers: list[Prediction], summary: dict[str, Any],
                            out_dir: Path, n_gallery: int = 12) -> None:
    """Risk-coverage on the tumour images, and the most confident errors (wrong tumour class, or a
    tumour named where there is none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    if "risk_coverage" in summary:
        fig, ax = plt.subplots(figsize=(4.8, 3.8))
        rc = summary["risk_coverage"]
        ax.plot(rc["coverage"], 1 - np.asarray(rc["risk"]))
        ax.set_xlabel("share answered (most confident first)")
        ax.set_ylabel("accuracy among answered")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "risk_coverage.png", dpi=110)
        plt.close(fig)
    errors = sorted(((a.confidence, i, a) for i, a in zip(items, answers)
                     if not a.error and not a.refer and a.predicted != i.label), key=lambda e: -e[0])[:n_gallery]
    if errors:
        plot_image_grid([read_slice(i.path) for _, i, _ in errors],
                        [f"{i.label}->{a.predicted} {a.confidence:.2f}" for _, i, a in errors],
                        out_dir / "confident_errors.png", title="most confident errors")
