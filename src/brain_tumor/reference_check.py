"""How far a reproduction lands from the committed reference runs of the same recipe.

A reference run is any finished run folder (``metrics.json`` + ``config.yaml``) under a results
tree whose recipe fingerprint (:func:`brain_tumor.config.recipe_fingerprint`: every setting but
the seed, precision and machine) and data split (``data.split``, ``data.seed``, the dataset's
folder name) equal the reproduction's, and which froze the same layers. Runs of one recipe with
other seeds or precisions are draws of it: their range is the seed-to-seed spread. A
reproduction is *within the spread* when its test accuracy lies in that range widened by twice
the binomial standard error of one accuracy on the test set (the sampling noise of a single run).
Everything is read from the run folders' own files, never from folder names.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from brain_tumor.config import read_run_config, recipe_fingerprint


def _split_key(config: dict[str, Any]) -> tuple[Any, ...]:
    data = config.get("data") or {}
    return data.get("split", "paper"), data.get("seed", 42), Path(str(data.get("root", ""))).name


def _identity(config: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    return json.dumps(recipe_fingerprint(config), sort_keys=True, default=str), _split_key(config)


def find_reference_runs(tree: Path, config: dict[str, Any], exclude: Path | None = None) -> list[dict[str, Any]]:
    """Finished runs under ``tree`` of the same recipe and split as ``config`` (a config as a
    dict), each as ``{"run": folder, "seed", "precision", "accuracy", "n_test"}``, sorted by folder;
    ``exclude`` (the reproduction's own folder) is left out."""
    wanted = _identity(config)
    found = []
    for metrics_file in sorted(tree.rglob("metrics.json")):
        run_dir = metrics_file.parent
        if not (run_dir / "config.yaml").is_file() or (exclude is not None and run_dir.resolve() == exclude.resolve()):
            continue
        try:
            other = read_run_config(run_dir)
            metrics = json.loads(metrics_file.read_text())
        except (OSError, ValueError, yaml.YAMLError):
            continue
        if "accuracy" not in metrics or _identity(other) != wanted:
            continue
        train = other.get("train") or {}
        found.append({"run": str(run_dir), "seed": train.get("seed"), "precision": train.get("precision"),
                      "accuracy": float(metrics["accuracy"]), "n_test": int(metrics.get("n_test", 0))})
    return found


def check_against_reference(accuracy: float, n_test: int, references: list[dict[str, Any]]) -> dict[str, Any]:
    """Where ``accuracy`` (on ``n_test`` slices) lies against the reference runs: the difference
    from their mean, their range (the seed-to-seed spread), the binomial standard error, and the
    verdict (``within``, ``outside`` or ``no reference``)."""
    out: dict[str, Any] = {"accuracy": accuracy, "n_test": n_test, "references": references}
    if not references:
        return out | {"verdict": "no reference"}
    accs = [r["accuracy"] for r in references]
    mean = sum(accs) / len(accs)
    se = math.sqrt(max(mean * (1 - mean), 1e-12) / max(n_test, 1))
    low, high = min(accs) - 2 * se, max(accs) + 2 * se
    return out | {"reference_mean": mean, "reference_min": min(accs), "reference_max": max(accs),
                  "seed_spread": max(accs) - min(accs), "binomial_se": se, "difference": accuracy - mean,
                  "tolerance": [low, high], "verdict": "within" if low <= accuracy <= high else "outside"}


def check_line(name: str, check: dict[str, Any]) -> str:
    """One sentence for a terminal or a report."""
    acc = f"{name}: test accuracy {100 * check['accuracy']:.2f}%"
    if check["verdict"] == "no reference":
        return f"{acc}; no committed reference run of this recipe to compare with"
    n = len(check["references"])
    spread = (f"seed-to-seed spread {100 * check['seed_spread']:.2f} points over {n} runs" if n > 1
              else "one reference run, so no seed-to-seed spread measured")
    reference = (f"{100 * check['reference_mean']:.2f}% (mean of {n} runs, "
                 f"{100 * check['reference_min']:.2f}-{100 * check['reference_max']:.2f}%)" if n > 1
                 else f"{100 * check['reference_mean']:.2f}%")
    return (f"{acc}; reference {reference}, {100 * check['difference']:+.2f} points; {spread}, "
            f"binomial SE {100 * check['binomial_se']:.2f} points: {check['verdict']} the spread "
            f"[{100 * check['tolerance'][0]:.2f}, {100 * check['tolerance'][1]:.2f}]%")
