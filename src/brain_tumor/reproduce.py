"""Reproduce the paper: both freeze scenarios on the paper split, every table and figure."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brain_tumor.config import RunConfig, save_config
from brain_tumor.environment import describe_environment
from brain_tumor.evaluation.plots import plot_image_grid
from brain_tumor.evaluation.report import comparison_html, comparison_markdown
from brain_tumor.evaluation.run_eval import (
    draw_run_figures,
    evaluate_checkpoint,
    read_history,
    write_json,
    write_predictions,
)
from brain_tumor.training.fit import PreparedData, fit, prepare_data
from brain_tumor.transforms import train_preset

log = logging.getLogger(__name__)
SCENARIOS = (30, 15)


def run_scenario(config: RunConfig, data: PreparedData, run_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Train and evaluate one scenario; writes config, metrics, predictions and figures."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    write_json(describe_environment(), run_dir / "environment.json")
    done = run_dir / "metrics.json"
    if done.is_file() and (work_dir / "model.pt").is_file():
        log.info("%s: already finished, skipping", run_dir)
        return dict(json.loads(done.read_text()))
    result = fit(config, data, run_dir, work_dir)
    history = read_history(run_dir / "logs" / "metrics.csv")
    start = time.perf_counter()
    metrics, probs, meta = evaluate_checkpoint(result.checkpoint, data.images, data.labels, data.split.test)
    eval_seconds = time.perf_counter() - start
    y_true = data.labels[data.split.test].numpy()
    best = result.best_epoch
    metrics.update({
        "scenario": f"freeze-{config.model.freeze_layers}",
        "val_accuracy": history.get("val_acc", [float("nan")] * (best + 1))[best],
        "n_train": len(data.split.train), "n_val": len(data.split.val), "n_test": len(data.split.test),
        "frozen_parameters": result.freeze.frozen_parameters,
        "trainable_parameters": result.freeze.trainable_parameters,
        "frozen_modules": list(result.freeze.frozen_modules),
        "epochs": result.epochs, "best_epoch": best + 1,
        "train_seconds": float(np.nansum(history.get("epoch_seconds", []))),
        "eval_seconds": eval_seconds, "seed": config.train.seed,
    })
    write_predictions(run_dir / "test_predictions.csv", [data.records[i].path for i in data.split.test],
                      y_true, probs, meta["class_names"])
    draw_run_figures(run_dir, metrics, y_true, probs, meta["class_names"], metrics["scenario"])
    write_json(metrics, done)
    return metrics


def draw_sample_grids(data: PreparedData, out_dir: Path, seed: int, n: int = 12) -> list[Path]:
    """The paper's example figures: resized slices and augmented versions of them."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(data.split.train, size=n, replace=False).tolist()
    names = [f"{data.class_names[int(data.labels[i])]} #{data.records[i].index}" for i in picks]
    resized = [data.images[i, 0].numpy() for i in picks]
    torch.manual_seed(seed)
    augment = train_preset("paper")
    augmented = [augment(data.images[i])[0].numpy() for i in picks]
    return [plot_image_grid(resized, names, out_dir / "resized_examples.png", title="resized to 224x224"),
            plot_image_grid(augmented, names, out_dir / "augmented_examples.png",
                            title="with the paper's augmentation")]


def reproduce(config: RunConfig, results_dir: Path, work_dir: Path,
              scenarios: tuple[int, ...] = SCENARIOS) -> dict[int, dict[str, Any]]:
    """Run every scenario (resumable) and write the comparison markdown and HTML report."""
    data = prepare_data(config, results_dir / "split.json")
    figures = draw_sample_grids(data, results_dir / "figures", config.data.seed)
    runs: dict[int, dict[str, Any]] = {}
    for n in scenarios:
        scenario_config = dataclasses.replace(config, model=dataclasses.replace(config.model, freeze_layers=n))
        runs[n] = run_scenario(scenario_config, data, results_dir / f"freeze-{n}", work_dir / f"freeze-{n}")
        write_report(runs, results_dir, figures)
    return runs


def write_report(runs: dict[int, dict[str, Any]], results_dir: Path, figures: list[Path]) -> None:
    """comparison.md and report.html from finished runs."""
    (results_dir / "comparison.md").write_text(comparison_markdown(runs))
    run_figures = [results_dir / f"freeze-{n}" / "figures" / name for n in sorted(runs, reverse=True)
                   for name in ("confusion_matrix.png", "roc.png", "curves.png")]
    (results_dir / "report.html").write_text(comparison_html(runs, figures + run_figures))
