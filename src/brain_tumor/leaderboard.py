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
from brain_tumor.cv_ensemble import ENSEMBLE_FILE
from brain_tumor.cv_report import (
    ci_text,
    cv_grouping,
    fold_cpus,
    fold_environments,
    fold_number,
    fold_seconds,
    is_plain_recipe,
    with_defaults,
)
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
    member_sizes: list[int] | None = None  # an ensemble's members' resolutions, where they differ

    @property
    def px(self) -> str:
        return "+".join(map(str, self.member_sizes)) if self.member_sizes else str(self.image_size)


def recipe_text(config: dict[str, Any]) -> str:
    """The recipe settings (image size aside) that differ from the default config."""
    defaults = recipe_fingerprint({})
    ours = recipe_fingerprint(config)
    changed = [f"{k}={v}" for k, v in ours.items() if v != defaults[k] and k != "data.image_size"]
    return ", ".join(changed) or "defaults"


def fold_dirs(cv_dir: Path) -> list[Path]:
    """The finished folds (those with test predictions) of a CV folder, in fold order."""
    return sorted((d for d in cv_dir.glob("fold-*") if (d / "test_predictions.csv").is_file()), key=fold_number)


def _fold_seconds(folds: list[Path]) -> list[float] | None:
    """Training + evaluation seconds of each fold (None if any fold did not record them)."""
    seconds = []
    for d in folds:
        try:
            value = fold_seconds(json.loads((d / "metrics.json").read_text()))
        except (OSError, ValueError):
            value = None
        if value is None:
            return None
        seconds.append(value)
    return seconds


def _cpu_hours(folds: list[Path], seconds: list[float] | None) -> float | None:
    """Core-hours: each fold's wall time times the threads it ran with (its environment.json)."""
    if not seconds:
        return None
    threads = [int(env.get("torch_threads") or 0) for env in fold_environments(folds)]
    if not all(threads):
        return None
    return sum(s * t for s, t in zip(seconds, threads, strict=True)) / 3600


def _ci(values: tuple[float, float, float], scale: float = 1.0) -> dict[str, float]:
    return {k: float(v) * scale for k, v in zip(("value", "low", "high"), values)}


def _patients(paths: list[str], patient_of: dict[str, str], cv_dir: Path) -> list[str]:
    missing = [p for p in paths if p not in patient_of]
    if missing:
        raise ValueError(f"{cv_dir}: {len(missing)} predicted slices are not in the dataset's manifest "
                         f"(e.g. {missing[0]}): cannot resample patients")
    return [patient_of[p] for p in paths]


def score(cv_dir: Path, patient_of: dict[str, str], n_boot: int = 2000,
          config: dict[str, Any] | None = None) -> Entry:
    """The row of one CV folder, from its folds' files (``config``: its recipe, default its
    config.yaml)."""
    config = config if config is not None else with_defaults(read_run_config(cv_dir))
    folds = fold_dirs(cv_dir)
    paths, y, probs = read_predictions(folds)
    groups = _patients(paths, patient_of, cv_dir)
    meningioma = CLASS_NAMES.index("meningioma")
    patient_y, patient_p = st.patient_level(y, probs, groups)
    seconds = _fold_seconds(folds)
    return Entry(
        name=cv_dir.name, image_size=int(config["data"]["image_size"]), recipe=recipe_text(config),
        folds=[fold_number(d) for d in folds], n_slices=len(paths),
        accuracy=_ci(st.bootstrap_ci(st.accuracy, y, probs, groups, n_boot)),
        meningioma_recall=_ci(st.bootstrap_ci(st.class_recall(meningioma), y, probs, groups, n_boot)),
        macro_f1=st.macro_f1(y, probs), ece=expected_calibration_error(probs, y),
        patient_accuracy=st.accuracy(patient_y, patient_p),
        minutes_per_fold=float(np.mean(seconds)) / 60 if seconds else None, cpu_hours=_cpu_hours(folds, seconds),
        cpu=sorted({c or "?" for c in fold_cpus(folds)}))


def choose_baseline(entry: Entry, config: dict[str, Any] | None, candidates: dict[str, dict[str, Any]],
                    complete: set[str]) -> str | None:
    """For a recipe other than the paper's: the paper recipe (:func:`is_plain_recipe`) at the
    entry's resolution, on all folds; among several, the one trained at the most similar budget
    (epochs, precision, weight averaging; for an ensemble, ``config`` None, the first by name).
    None for the paper recipe itself, and where none fits."""
    if config is not None and is_plain_recipe(config):
        return None
    same_size = [n for n, c in candidates.items() if n in complete and is_plain_recipe(c)
                 and c["data"]["image_size"] == entry.image_size]
    if not same_size:
        return None

    def closeness(name: str) -> tuple[int, str]:
        c = candidates[name]
        same = sum(c["train"][k] == config["train"][k] for k in ("max_epochs", "precision", "ema_decay")) \
            if config is not None else 0
        return -same, name

    return min(same_size, key=closeness)


def score_ensemble(cv_dir: Path, patient_of: dict[str, str], members: dict[str, Entry], n_boot: int = 2000) -> Entry:
    """The row of an ensemble folder (``brain-tumor ensemble``): scored from its own predictions;
    its cost is its members' (their minutes per fold and core-hours added up, where all are known).
    Members of several resolutions: it is compared with the paper recipe at the smallest."""
    spec = json.loads((cv_dir / ENSEMBLE_FILE).read_text())
    names = [str(n) for n in spec["members"]]
    known = [members[n] for n in names if n in members]
    entry = score(cv_dir, patient_of, n_boot, config=with_defaults({}))  # size and recipe replaced below
    minutes = [e.minutes_per_fold for e in known]
    hours = [e.cpu_hours for e in known]
    complete = len(known) == len(names)
    sizes = sorted({int(v) for v in spec["image_sizes"]})
    return Entry(**{**asdict(entry), "image_size": sizes[0], "member_sizes": sizes if len(sizes) > 1 else None,
                    "recipe": "ensemble, mean of the probabilities of " + " + ".join(f"`{n}`" for n in names),
                    "minutes_per_fold": sum(m for m in minutes if m is not None)
                    if complete and None not in minutes else None,
                    "cpu_hours": sum(h for h in hours if h is not None) if complete and None not in hours else None,
                    "cpu": sorted({c for e in known for c in e.cpu}) or entry.cpu})


def leaderboard(cv_root: Path, n_boot: int = 2000) -> list[Entry]:
    """Every CV on the official patient-wise folds under ``cv_root`` (those whose summary names
    another grouping are left out; the folders' names mean nothing): complete CVs sorted by pooled accuracy,
    then partial ones; each recipe other than the paper's with its difference against
    :func:`choose_baseline`."""
    dirs = [d for d in sorted(cv_root.iterdir()) if (d / "config.yaml").is_file() and fold_dirs(d)
            and cv_grouping(d) in ("official", None)]
    if not dirs:
        raise ValueError(f"{cv_root}: no cross-validation folders with finished folds")
    configs = {d.name: with_defaults(read_run_config(d)) for d in dirs}
    patient_of = patients_by_path(dirs[0])
    entries = {d.name: score(d, patient_of, n_boot) for d in dirs}
    for d in sorted(cv_root.glob(f"*/{ENSEMBLE_FILE}")):  # the same filter as for the CVs themselves
        if fold_dirs(d.parent) and cv_grouping(d.parent) == "official":
            entries[d.parent.name] = score_ensemble(d.parent, patient_of, entries, n_boot)
    complete = {n for n, e in entries.items() if len(e.folds) == FOLDS}
    rows = []
    for name, entry in entries.items():
        baseline = choose_baseline(entry, configs.get(name), configs, complete)
        if baseline is not None:
            t = compare(cv_root / name, cv_root / baseline, patient_of)
            entry = Entry(**{**asdict(entry), "baseline": baseline,
                             "difference": {k: 100 * v for k, v in t["accuracy_difference_95ci_by_patient"].items()},
                             "meningioma_difference": {k: 100 * v for k, v in
                                                       t["meningioma_recall_difference_95ci_by_patient"].items()}})
        rows.append(entry)
    return sorted(rows, key=lambda e: (len(e.folds) != FOLDS, -e.accuracy["value"]))


def _difference_text(entry: Entry, entries: list[Entry]) -> str:
    if entry.baseline is not None:
        return f"{ci_text(entry.difference, 2, signed=True)} vs `{entry.baseline}`"
    return "the baseline" if any(e.baseline == entry.name for e in entries) else "—"


def markdown(entries: list[Entry]) -> str:
    """The table, with a note on how to read it."""
    header = ["CV folder", "px", "recipe (changed from the defaults)", "folds", "accuracy [95% CI]",
              "vs paper recipe, points [95% CI]", "meningioma recall [95% CI]", "macro-F1", "ECE",
              "patient-level accuracy", "min per fold", "core-hours, all folds", "CPU"]
    rows = [[f"`{e.name}`", e.px, e.recipe, ",".join(map(str, e.folds)),
             ci_text({k: 100 * v for k, v in e.accuracy.items()}, 2),
             _difference_text(e, entries),
             ci_text(e.meningioma_recall, 3), f"{e.macro_f1:.3f}", f"{e.ece:.4f}", f"{100 * e.patient_accuracy:.2f}",
             "?" if e.minutes_per_fold is None else f"{e.minutes_per_fold:.0f}",
             "?" if e.cpu_hours is None else f"{e.cpu_hours:.1f}", "; ".join(e.cpu)] for e in entries]
    return "\n".join([
        "# Recipes on new patients: the official patient-wise folds", "",
        "Written by `brain-tumor leaderboard`. Complete 5-fold CVs first, sorted by pooled accuracy; then partial ones "
        "(their accuracy is over their folds only). The difference is against the paper recipe (freeze 15, Adam + "
        "ReduceLROnPlateau, paper preprocessing and augmentation) trained at the same resolution, on the slices both "
        "scored, with a 95% CI resampling patients. Minutes per fold are training + evaluation on the CPU named, "
        "core-hours that wall time times the threads used, over all folds; runs interrupted and resumed count only "
        "their last piece. An ensemble averages the probabilities of the CVs it names, fold by fold (each member's "
        "fold model never saw that fold's patients); its cost is its members' added up, and it answers with one "
        "forward pass per member. Every recipe tried is listed, the losers too; "
        "picking the top row is itself a choice made on these test folds, so a winner's margin needs confirming on "
        "data it was not chosen on.", "",
        markdown_table(header, rows), ""])


def to_json(entries: list[Entry]) -> list[dict[str, Any]]:
    """The table's rows as plain dicts."""
    return [asdict(e) for e in entries]

