"""Comparison of our runs with the paper: a markdown table and a self-contained HTML report."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

# Salsabila et al. 2025 (JISICOM 9(1)), as reported
PAPER: dict[int, dict[str, float]] = {
    30: {"accuracy": 0.9088, "val_accuracy": 0.9018, "meningioma_recall": 0.73, "auc": 0.98},
    15: {"accuracy": 0.9186, "val_accuracy": 0.8855, "meningioma_recall": 0.68, "auc": 0.98},
}


def comparison_rows(runs: dict[int, dict[str, Any]]) -> list[list[str]]:
    """Rows ``[scenario, metric, paper, ours]`` for every scenario we ran."""
    rows = []
    for n, m in sorted(runs.items(), reverse=True):
        paper = PAPER.get(n, {})
        ours = {"accuracy": m["accuracy"], "val_accuracy": m.get("val_accuracy"),
                "meningioma_recall": m["recall"]["meningioma"], "auc": m["macro_auc"]}
        for key, value in ours.items():
            ref = paper.get(key)
            rows.append([f"freeze {n}", key, f"{ref:.4f}" if ref is not None else "-",
                         f"{value:.4f}" if value is not None else "-"])
    return rows


def per_class_rows(runs: dict[int, dict[str, Any]]) -> list[list[str]]:
    """Rows ``[scenario, class, precision, recall, f1, auc, support]``."""
    rows = []
    for n, m in sorted(runs.items(), reverse=True):
        for c in m["precision"]:
            rows.append([f"freeze {n}", c, f"{m['precision'][c]:.3f}", f"{m['recall'][c]:.3f}",
                         f"{m['f1'][c]:.3f}", f"{m['auc'][c]:.4f}", str(m["support"][c])])
    return rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cost_rows(runs: dict[int, dict[str, Any]]) -> list[list[str]]:
    """Rows ``[scenario, frozen params, trainable params, epochs, best epoch, train minutes]``."""
    return [[f"freeze {n}", f"{m['frozen_parameters']:,}", f"{m['trainable_parameters']:,}",
             str(m["epochs"]), str(m["best_epoch"]), f"{m['train_seconds'] / 60:.1f}"]
            for n, m in sorted(runs.items(), reverse=True)]


def comparison_markdown(runs: dict[int, dict[str, Any]]) -> str:
    """The whole comparison as markdown."""
    return "\n\n".join([
        "# Paper split: ours vs Salsabila et al. 2025",
        "Test set: 614 slices (286 glioma, 142 meningioma, 186 pituitary) of the paper's "
        "stratified random 80:20 split; never used to choose anything.",
        markdown_table(["scenario", "metric", "paper", "ours"], comparison_rows(runs)),
        "## Per class (ours, test set)",
        markdown_table(["scenario", "class", "precision", "recall", "F1", "AUC", "support"],
                       per_class_rows(runs)),
        "## Cost",
        markdown_table(["scenario", "frozen params", "trainable params", "epochs", "best epoch",
                        "train minutes"], cost_rows(runs)),
    ]) + "\n"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}"><figcaption>{html.escape(path.stem)}</figcaption></figure>'


def comparison_html(runs: dict[int, dict[str, Any]], figures: list[Path], extra_sections: str = "") -> str:
    """A self-contained HTML report (figures embedded)."""
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
             "figure{display:inline-block;margin:6px}img{max-width:520px}")
    parts = [f"<html><head><meta charset='utf-8'><title>brain-tumor: paper reproduction</title>"
             f"<style>{style}</style></head><body>",
             "<h1>Paper split: ours vs Salsabila et al. 2025</h1>",
             _html_table(["scenario", "metric", "paper", "ours"], comparison_rows(runs)),
             "<h2>Per class (ours, test set)</h2>",
             _html_table(["scenario", "class", "precision", "recall", "F1", "AUC", "support"], per_class_rows(runs)),
             "<h2>Cost</h2>",
             _html_table(["scenario", "frozen params", "trainable params", "epochs", "best epoch", "train minutes"],
                         cost_rows(runs)),
             extra_sections, "<h2>Figures</h2>", *[_img(p) for p in figures if p.is_file()], "</body></html>"]
    return "\n".join(parts)
