"""Figures drawn from already computed metrics; nothing is computed here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion_matrix(matrix: list[list[int]], class_names: list[str], path: Path, title: str = "") -> Path:
    """Counts with row-normalised shading."""
    cm = np.asarray(matrix)
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{cm[i, j]}\n{share[i, j]:.0%}", ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    return _save(fig, path)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], aucs: dict[str, float], path: Path,
             title: str = "") -> Path:
    """One-vs-rest ROC curves with their AUCs."""
    fig, ax = plt.subplots(figsize=(4.6, 4))
    for name, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {aucs[name]:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "ROC, one vs rest")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_history(history: dict[str, list[float]], path: Path, title: str = "") -> Path:
    """Train/validation accuracy and loss per epoch (``history`` maps metric -> values)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    for ax, metric in zip(axes, ("acc", "loss")):
        for stage in ("train", "val"):
            values = history.get(f"{stage}_{metric}", [])
            ax.plot(range(1, len(values) + 1), values, marker="o", label=stage)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title or "training curves")
    return _save(fig, path)


def plot_image_grid(images: list[np.ndarray], titles: list[str], path: Path, columns: int = 6,
                    title: str = "") -> Path:
    """Grey images in a grid with a caption each."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(1.8 * columns, 1.9 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, caption in zip(axes.ravel(), images, titles):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(caption, fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


Bins = tuple[np.ndarray, np.ndarray, np.ndarray]


def plot_reliability(before: Bins, after: Bins,
                     ece_before: float, ece_after: float, path: Path) -> Path:
    """Reliability diagrams ``(confidence, accuracy, count)`` per bin, before/after scaling."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8), sharey=True)
    for ax, (conf, acc, count), name, ece in zip(axes, (before, after), ("before", "after"), (ece_before, ece_after)):
        used = count > 0
        edges = np.linspace(0, 1, len(count) + 1)
        ax.bar(edges[:-1][used], acc[used], width=1 / len(count), align="edge", alpha=0.7,
               edgecolor="k", label="accuracy")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.scatter(conf[used], acc[used], s=12, color="C3", label="bin mean confidence", zorder=3)
        ax.set_title(f"{name} temperature scaling (ECE {ece:.4f})")
        ax.set_xlabel("confidence")
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def plot_risk_coverage(coverage: np.ndarray, risk: np.ndarray, chosen: tuple[float, float], path: Path,
                       target: float) -> Path:
    """Error rate of answered cases against the share answered; the chosen operating point marked."""
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    ax.plot(coverage, risk, label="test set")
    ax.scatter([chosen[0]], [chosen[1]], color="C3", zorder=3, label="threshold from validation")
    ax.axhline(target, color="k", ls=":", lw=0.8, label=f"target error {target:.0%}")
    ax.set_xlabel("coverage (share answered)")
    ax.set_ylabel("error rate among answered")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_overlay_grid(overlays: list[np.ndarray], titles: list[str], boxes: list[tuple[float, float, float, float]],
                      path: Path, columns: int = 6, title: str = "") -> Path:
    """RGB overlays with the tumour box drawn."""
    rows = max(1, int(np.ceil(len(overlays) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, caption, (cx, cy, bw, bh) in zip(axes.ravel(), overlays, titles, boxes):
        h, w = image.shape[:2]
        ax.imshow(image)
        ax.add_patch(Rectangle(((cx - bw / 2) * w, (cy - bh / 2) * h), bw * w, bh * h,
                               fill=False, edgecolor="white", lw=1))
        ax.set_title(caption, fontsize=7)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_shift(results: dict[str, dict[str, Any]], path: Path) -> Path:
    """Accuracy per shift family and severity, one line per model (``results[model]`` holds
    ``clean`` and ``shifts[family] = [(severity label, accuracy), ...]``)."""
    models = list(results)
    families = list(results[models[0]]["shifts"])
    columns = 4
    rows = (len(families) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), squeeze=False)
    for ax, family in zip(axes.ravel(), families):
        for model in models:
            levels = results[model]["shifts"][family]
            ax.plot(range(len(levels) + 1), [results[model]["clean"]] + [a for _, a in levels], marker="o",
                    label=model)
            ax.set_xticks(range(len(levels) + 1), ["none"] + [name for name, _ in levels], fontsize=7)
        ax.set_title(family, fontsize=9)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(families):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("accuracy")
    axes[0, 0].legend(fontsize=7)
    return _save(fig, path)


def plot_steps(rows: list[list[np.ndarray]], titles: list[str], path: Path) -> Path:
    """A grid of images, one row per example, one column per processing step."""
    fig, axes = plt.subplots(len(rows), len(titles), figsize=(2.2 * len(titles), 2.2 * len(rows)), squeeze=False)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            axes[r, c].imshow(image, cmap="gray", vmin=0, vmax=1 if image.dtype != np.uint8 else 255)
            axes[r, c].axis("off")
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=8)
    return _save(fig, path)
