"""The recipe table: every patient-wise CV under a folder, one row per recipe, sorted by pooled
accuracy, each with its paired difference against the paper recipe (freeze 15) trained at the
same resolution, on the same held-out slices, with a CI resampling patients.

Every figure is recomputed from the folds' own files (test_predictions.csv, metrics.json,
environment.json), so CVs written before a summary field existed are scored the same way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brain_tumor.comparison import compare, patients_by_path, read_predictions
from brain_tumor.config import read_run_config, recipe_fingerprint
from brain_tumor.cv_report import _is_plain, _with_defaults
from brain_tumor.data.manifest import CLASS_NAMES
from brain_tumor.evaluation import statistics as st
from brain_tumor.evaluation.calibration import expected_calibration_error
from brain_tumor.evaluation.report import markdown_table

FOLDS = 5  # the official CV of the Figshare dataset


@dataclass(frozen=True)
class Entry:
    """One CV's row of the table."""

    name: str
    image_size: int
    recipe: str  # the settings that differ from the default config, ``section.key=value``
    folds: list[int]
    n_slices: int
    accuracy: dict[str, float]  # value, low, high (95% CI resampling patients)
    meningioma_recall: dict[str, float]
    macro_f1: float
    ece: float
    patient_accuracy: float
    minutes_per_fold: float | None
    cpu_hours: float | None  # all its folds: wall time x the threads each fold trained with
    cpu: list[str]
    baseline: str | None = None
    difference: dict[str, float] | None = None  # accuracy points against the baseline, on shared slices
    meningioma_difference: dict[str, float] | None = None


def recipe_text(config: dict[str, Any]) -> str:
    """The recipe settings (image size aside) that differ from the default config."""
    defaults = recipe_fingerprint({})
    ours = recipe_fingerprint(config)
    changed = [f"{k}={v}" for k, v in ours.items() if v != defaults[k] and k != "data.image_size"]
    return ", ".join(changed) or "defaults"


def fold_dirs(cv_dir: Path) -> list[Path]:
    """The finished folds (those with test predictions) of a CV folder, in fold order."""
    found = [d for d in cv_dir.glob("fold-*") if (d / "test_predictions.csv").is_file()]
    return sorted(found, key=lambda d: int(d.name.split("-")[1]))


def _fold_seconds(folds: list[Path]) -> list[float] | None:
    """Training + evaluation seconds of each fold (None if a fold did not record them)."""
    seconds = []
    for d in folds:
        metrics = json.loads((d / "metrics.json").read_text())
        if metrics.get("train_seconds") is None:
            return None
        seconds.append(metrics["train_seconds"] + (metrics.get("eval_seconds") or 0.0))
    return seconds


def _cpu_hours(folds: list[Path], seconds: list[float] | None) -> float | None:
    """Core-hours: each fold's wall time times the threads it ran with (its environment.json)."""
    if not seconds:
        return None
    total = 0.0
    for d, s in zip(folds, seconds, strict=True):
        try:
            threads = json.loads((d / "environment.json").read_text()).get("torch_threads")
        except (OSError, ValueError):
            return None
        if not threads:
            return None
        total += s * int(threads) / 3600
    return total


def _cpus(folds: list[Path]) -> list[str]:
    kinds = set()
    for d in folds:
        try:
            env = json.loads((d / "environment.json").read_text())
        except (OSError, ValueError):
            continue
        kinds.add(str(env.get("cpu_kind") or env.get("cpu") or "?"))
    return sorted(kinds)


def _ci(values: tuple[float, float, float], scale: float = 1.0) -> dict[str, float]:
    return {k: float(v) * scale for k, v in zip(("value", "low", "high"), values)}


def score(cv_dir: Path, patient_of: dict[str, str], n_boot: int = 2000) -> Entry:
    """The row of one CV folder, from its folds' files."""
    config = _with_defaults(read_run_config(cv_dir))
    folds = fold_dirs(cv_dir)
    paths, y, probs = read_predictions(folds)
    groups = [patient_of.get(p, p) for p in paths]
    meningioma = CLASS_NAMES.index("meningioma")
    patient_y, patient_p = st.patient_level(y, probs, groups)
    seconds = _fold_seconds(folds)
    return Entry(
        name=cv_dir.name, image_size=int(config["data"]["image_size"]), recipe=recipe_text(config),
        folds=[int(d.name.split("-")[1]) for d in folds], n_slices=len(paths),
        accuracy=_ci(st.bootstrap_ci(st.accuracy, y, probs, groups, n_boot)),
        meningioma_recall=_ci(st.bootstrap_ci(st.class_recall(meningioma), y, probs, groups, n_boot)),
        macro_f1=st.macro_f1(y, probs), ece=expected_calibration_error(probs, y),
        patient_accuracy=st.accuracy(patient_y, patient_p),
        minutes_per_fold=float(np.mean(seconds)) / 60 if seconds else None, cpu_hours=_cpu_hours(folds, seconds),
        cpu=_cpus(folds))


def choose_baseline(entry: Entry, config: dict[str, Any], candidates: dict[str, dict[str, Any]],
                    complete: set[str]) -> str | None:
    """The paper recipe (freeze 15, paper preprocessing and augmentation, Adam + plateau, nothing
    added) at the entry's resolution, on all folds; among several, the one trained at the most
    similar budget (epochs, precision, weight averaging)."""
    same_size = [n for n, c in candidates.items() if n != entry.name and n in complete and _is_plain(c)
                 and c["data"]["image_size"] == entry.image_size]
    if not same_size:
        return None

    def closeness(name: str) -> tuple[int, str]:
        c = candidates[name]
        same = sum(c["train"][k] == config["train"][k] for k in ("max_epochs", "precision", "ema_decay"))
        return -same, name

    return min(same_size, key=closeness)


def leaderboard(cv_root: Path, n_boot: int = 2000) -> list[Entry]:
    """Every patient-wise (official folds) CV under ``cv_root``: complete CVs sorted by pooled
    accuracy, then partial ones; each with its difference against :func:`choose_baseline`."""
    dirs = [d for d in sorted(cv_root.iterdir()) if (d / "config.yaml").is_file() and fold_dirs(d)
            and not d.name.startswith("slice-")]
    if not dirs:
        raise ValueError(f"{cv_root}: no cross-validation folders with finished folds")
    configs = {d.name: _with_defaults(read_run_config(d)) for d in dirs}
    patient_of = patients_by_path(dirs[0])
    entries = {d.name: score(d, patient_of, n_boot) for d in dirs}
    complete = {n for n, e in entries.items() if len(e.folds) == FOLDS}
    rows = []
    for name, entry in entries.items():
        baseline = choose_baseline(entry, configs[name], configs, complete)
        if baseline is not None:
            t = compare(cv_root / name, cv_root / baseline, patient_of)
            entry = Entry(**{**asdict(entry), "baseline": baseline,
                             "difference": {k: 100 * v for k, v in t["accuracy_difference_95ci_by_patient"].items()},
                             "meningioma_difference": {k: 100 * v for k, v in
                                                       t["meningioma_recall_difference_95ci_by_patient"].items()}})
        rows.append(entry)
    return sorted(rows, key=lambda e: (len(e.folds) != FOLDS, -e.accuracy["value"]))


def _ci_text(ci: dict[str, float] | None, digits: int, signed: bool = False) -> str:
    if ci is None:
        return "—"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"{f.format(ci['value'])} [{f.format(ci['low'])}, {f.format(ci['high'])}]"


def _difference_text(entry: Entry, entries: list[Entry]) -> str:
    if entry.baseline is not None:
        return f"{_ci_text(entry.difference, 2, signed=True)} vs `{entry.baseline}`"
    return "the baseline" if any(e.baseline == entry.name for e in entries) else "—"


def markdown(entries: list[Entry]) -> str:
    """The table, with a note on how to read it."""
    header = ["CV folder", "px", "recipe (changed from the defaults)", "folds", "accuracy [95% CI]",
              "vs paper recipe, points [95% CI]", "meningioma recall [95% CI]", "macro-F1", "ECE",
              "patient-level accuracy", "min per fold", "core-hours, all folds", "CPU"]
    rows = [[f"`{e.name}`", str(e.image_size), e.recipe, ",".join(map(str, e.folds)),
             _ci_text({k: 100 * v for k, v in e.accuracy.items()}, 2),
             _difference_text(e, entries),
             _ci_text(e.meningioma_recall, 3), f"{e.macro_f1:.3f}", f"{e.ece:.4f}", f"{100 * e.patient_accuracy:.2f}",
             "?" if e.minutes_per_fold is None else f"{e.minutes_per_fold:.0f}",
             "?" if e.cpu_hours is None else f"{e.cpu_hours:.1f}", "; ".join(e.cpu)] for e in entries]
    return "\n".join([
        "# Recipes on new patients: the official patient-wise folds", "",
        "Written by `brain-tumor leaderboard`. Complete 5-fold CVs first, sorted by pooled accuracy; then partial ones "
        "(their accuracy is over their folds only). The difference is against the paper recipe (freeze 15, Adam + "
        "ReduceLROnPlateau, paper preprocessing and augmentation) trained at the same resolution, on the slices both "
        "scored, with a 95% CI resampling patients. Minutes per fold are training + evaluation on the CPU named, "
        "core-hours that wall time times the threads used, over all folds; runs interrupted and resumed count only "
        "their last piece. Every recipe tried is listed, the losers too; "
        "picking the top row is itself a choice made on these test folds, so a winner's margin needs confirming on "
        "data it was not chosen on.", "",
        markdown_table(header, rows), ""])


def to_json(entries: list[Entry]) -> list[dict[str, Any]]:
    """The table's rows as plain dicts."""
    return [asdict(e) for e in entries]

