"""Train and evaluate one run: a scenario of the paper, a cross-validation fold, a ``train``.

``reproduce``, ``cv``, the ``train`` command and ``bench/time_to_accuracy.py`` all run through
:func:`run_scenario`; it lives here, apart from any of them, so that none imports another for it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from brain_tumor.config import RunConfig, resolve_precision_setting, save_config
from brain_tumor.environment import describe_environment
from brain_tumor.evaluation.run_eval import (
    draw_run_figures,
    evaluate_checkpoint,
    read_history,
    write_json,
    write_predictions,
)
from brain_tumor.hardware import apply_threads, choose_precision, describe_compute, resolve_threads
from brain_tumor.run_record import run_record
from brain_tumor.training.fit import PreparedData, fit

log = logging.getLogger(__name__)


def run_scenario(config: RunConfig, data: PreparedData, run_dir: Path, work_dir: Path,
                 extra_callbacks: Sequence[L.Callback] = (), kind: str = "train") -> dict[str, Any]:
    """Train and evaluate one scenario; writes config, metrics, predictions, figures and
    ``run.json`` (:mod:`brain_tumor.run_record`; ``kind`` says what the run is).

    A scenario whose metrics and test predictions exist is finished and skipped (its checkpoint
    may live on another machine; commands that need it say so)."""
    done = run_dir / "metrics.json"
    if done.is_file() and (run_dir / "test_predictions.csv").is_file():
        log.info("%s: already finished, skipping", run_dir)
        return dict(json.loads(done.read_text()))
    run_dir.mkdir(parents=True, exist_ok=True)
    requested = config.train.precision
    apply_threads(resolve_threads(config.train.threads))  # before: auto may time bf16 at these threads
    config = resolve_precision_setting(config)  # the saved config says what "auto" chose
    save_config(config, run_dir / "config.yaml")  # written only by the run that trains
    compute = describe_compute(choose_precision(requested, config.train.accelerator),
                               resolve_threads(config.train.threads))
    environment = describe_environment()
    write_json({**environment, "compute": compute}, run_dir / "environment.json")
    result = fit(config, data, run_dir, work_dir, extra_callbacks)
    if not result.global_zero:  # other DDP ranks: rank 0 evaluates and writes
        return {}
    history = read_history(run_dir / "logs" / "metrics.csv")
    start = time.perf_counter()
    metrics, probs, meta, evidence = evaluate_checkpoint(result.checkpoint, data.images, data.labels,
                                                         data.split.test)
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
    write_predictions(run_dir / "test_predictions.csv", [data.records[i].result_name for i in data.split.test],
                      y_true, probs, meta["class_names"], evidence)
    draw_run_figures(run_dir, metrics, y_true, probs, meta["class_names"], metrics["scenario"])
    split = {"train": data.split.train, "val": data.split.val, "test": data.split.test}
    write_json(run_record(config, kind, data.split.name, split, result.checkpoint, metrics, environment,
                          fold=data.fold), run_dir / "run.json")
    write_json(metrics, done)  # last: its presence means the run is finished
    return metrics
