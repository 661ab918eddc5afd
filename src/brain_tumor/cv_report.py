"""Reports of finished runs: a CV's summary (pooled metrics with patient-bootstrap CIs), and
overviews of every CV under a folder and every run on the paper split, each variant against the
plain freeze-15 recipe trained at the same budget (markdown and HTML)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from brain_tumor.comparison import compare, compare_repeats, patients_by_path
from brain_tumor.config import RunConfig, recipe_fingerprint, to_dict
from brain_tumor.data.manifest import CLASS_NAMES
from brain_tumor.evaluation import statistics as st
from brain_tumor.evaluation.calibration import expected_calibration_error
from brain_tumor.evaluation.metrics import classification_metrics
from brain_tumor.evaluation.report import _html_table, markdown_table
from brain_tumor.run_record import runs_of_kind


def ci_text(ci: dict[str, float] | None, digits: int = 4, signed: bool = False) -> str:
    """``value [low, high]`` of a CI dict (``—`` for none)."""
    if ci is None:
        return "—"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"{f.format(ci['value'])} [{f.format(ci['low'])}, {f.format(ci['high'])}]"


BUDGET = (("data", "image_size"), ("train", "max_epochs"), ("train", "precision"), ("train", "ema_decay"))
# what a recipe may spend without becoming another recipe: resolution, epochs and their stopping, averaging
BUDGET_SETTINGS = frozenset({"data.image_size", "train.max_epochs", "train.early_stop_patience", "train.ema_decay"})
PAPER_RECIPE = recipe_fingerprint({"model": {"freeze_layers": 15}})  # the paper's better scenario


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the settings it predates filled in with their defaults."""
    defaults = to_dict(RunConfig())
    defaults["train"]["precision"] = "32-true"  # what runs trained at before the setting existed (now "auto")
    return {section: {**values, **(config.get(section) or {})} for section, values in defaults.items()}


def is_plain_recipe(config: dict[str, Any]) -> bool:
    """The paper recipe (freeze 15; Adam + ReduceLROnPlateau at the paper's rate; paper
    preprocessing and augmentation; nothing added): every recipe setting but the budget
    (:data:`BUDGET_SETTINGS`) as :data:`PAPER_RECIPE` has it."""
    ours = recipe_fingerprint(config)
    return all(ours[k] == v for k, v in PAPER_RECIPE.items() if k not in BUDGET_SETTINGS)


def fold_number(fold_dir: Path) -> int:
    """``fold-3`` -> 3."""
    return int(fold_dir.name.split("-")[1])


def fold_seconds(metrics: dict[str, Any]) -> float | None:
    """Training plus evaluation wall time of one fold (``None`` where the fold did not record it)."""
    parts = [metrics.get("train_seconds"), metrics.get("eval_seconds")]
    return None if parts[0] is None else float(sum(p for p in parts if p is not None))


def fold_environments(fold_dirs: list[Path]) -> list[dict[str, Any]]:
    """Each fold's environment.json ({} where missing or unreadable)."""
    out = []
    for d in fold_dirs:
        try:
            out.append(json.loads((d / "environment.json").read_text()))
        except (OSError, ValueError):
            out.append({})
    return out


def fold_cpus(fold_dirs: list[Path]) -> list[str | None]:
    """The CPU each fold ran on, so a wall time says where it holds."""
    return [env.get("cpu_kind") or env.get("cpu") for env in fold_environments(fold_dirs)]


def _budget(config: dict[str, Any] | None) -> tuple[Any, ...] | None:
    return None if config is None else tuple(config[s][k] for s, k in BUDGET)


def baselines(configs: dict[str, dict[str, Any] | None],
              groupings: dict[str, str | None] | None = None) -> dict[str, str]:
    """variant -> baseline for the patient-wise CVs (``groupings``: each CV's, from its summary;
    slice-level ones are left out): a variant is compared with the plain paper recipe (freeze 15,
    no class weighting or oversampling, paper preprocessing and augmentation) trained at the same
    resolution, epochs, precision and weight averaging. A CV without a config is neither."""
    patient_wise = {n: c for n, c in configs.items()
                    if c is not None and (groupings or {}).get(n) != "slice"}
    plain_by_budget: dict[Any, str] = {}
    for name, config in patient_wise.items():
        if is_plain_recipe(config):
            plain_by_budget.setdefault(_budget(config), name)
    return {n: plain_by_budget[_budget(c)] for n, c in patient_wise.items()
            if n not in plain_by_budget.values() and _budget(c) in plain_by_budget}


def leakage_pairs(configs: dict[str, dict[str, Any] | None], groupings: dict[str, str | None]) -> list[tuple[str, str]]:
    """(slice-level CV, patient-wise CV) pairs of one recipe and budget: the same settings, folds
    made two ways, so their difference is what slice-level folds inflate (the first patient-wise
    match of each slice-level CV)."""
    pairs = []
    for a, grouping in groupings.items():
        ca = configs.get(a)
        if grouping != "slice" or ca is None:
            continue
        matches = [b for b, g in groupings.items() if g == "official" and (cb := configs.get(b)) is not None
                   and recipe_fingerprint(cb) == recipe_fingerprint(ca) and _budget(cb) == _budget(ca)]
        pairs += [(a, matches[0])] if matches else []
    return pairs


def _recipe_text(config: dict[str, Any] | None) -> str:
    if config is None:
        return "?"
    data, train = config["data"], config["train"]
    ema = f", EMA {train['ema_decay']}" if train.get("ema_decay") else ""
    return f"{data['image_size']} px, ≤{train['max_epochs']} epochs, {train['precision']}{ema}"


def cv_overview(cv_root: Path) -> tuple[str, str]:
    """Markdown and HTML summarising every CV under ``cv_root`` (one row per protocol), the
    leakage inflation (slice-level minus patient-wise) and each patient-wise variant (freeze 30,
    class weighting, oversampling, robust recipe) against the plain freeze-15 recipe trained at the
    same resolution, epochs, precision and weight averaging (:func:`baselines`)."""
    rows = []
    summaries = {d.name: json.loads((d / "summary.json").read_text())
                 for d in sorted(cv_root.glob("*")) if (d / "summary.json").is_file()}
    if not summaries:
        return "", ""
    configs = {n: with_defaults(yaml.safe_load((cv_root / n / "config.yaml").read_text()))
               if (cv_root / n / "config.yaml").is_file() else None for n in summaries}
    for name, s in summaries.items():
        ci = s["bootstrap_95ci_by_patient"]
        rows.append([name, _recipe_text(configs[name]), str(s["folds"]),
                     f"{s['fold_accuracy_mean']:.4f} ± {s['fold_accuracy_std']:.4f}",
                     *[ci_text(ci[k]) for k in ("accuracy", "macro_f1", "meningioma_recall", "macro_auc")],
                     f"{s['patient_level']['accuracy']:.4f}"])
    header = ["protocol", "training", "folds", "fold accuracy mean ± sd", "accuracy [95% CI]", "macro F1 [95% CI]",
              "meningioma recall [95% CI]", "macro AUC [95% CI]", "patient-level accuracy"]
    md = ["## Cross-validation (CIs resample patients)", "", markdown_table(header, rows)]
    notes = []
    groupings = {n: sm.get("grouping") for n, sm in summaries.items()}
    for a, b in leakage_pairs(configs, groupings):
        if summaries[a]["folds"] == summaries[b]["folds"] == 5:
            gap = summaries[a]["pooled"]["accuracy"] - summaries[b]["pooled"]["accuracy"]
            notes.append(f"Leakage: the same recipe scores {gap * 100:+.2f} points of accuracy with slice-level folds "
                         f"({a}) than with the official patient-wise folds ({b}).")
    comparison_rows = []
    for name, baseline in baselines(configs, groupings).items():
        try:
            patient_of = patients_by_path(cv_root / name)
        except (OSError, ValueError):  # the dataset is not here: McNemar only
            patient_of = None
        t = compare(cv_root / name, cv_root / baseline, patient_of)
        a, b = summaries[name]["fold_accuracy"], summaries[baseline]["fold_accuracy"]
        paired = f"{st.paired_fold_test(a, b):.3g}" if len(a) == len(b) > 1 else "n/a"
        diffs = [ci_text({k: 100 * v for k, v in t[f"{m}_difference_95ci_by_patient"].items()}, digits=2)
                 if f"{m}_difference_95ci_by_patient" in t else "n/a" for m in ("accuracy", "meningioma_recall")]
        comparison_rows.append([name, baseline, str(t["n"]), f"{t['accuracy_a']:.4f} vs {t['accuracy_b']:.4f}", *diffs,
                                f"{t['a_right_b_wrong']} / {t['a_wrong_b_right']}", f"{t['p_value']:.3g}", paired])
    comparison_header = ["variant", "baseline", "slices", "accuracy", "accuracy difference, points [95% CI]",
                         "meningioma recall difference, points [95% CI]", "right only in variant / only in baseline",
                         "McNemar p", "paired t-test over folds p"]
    if comparison_rows:
        notes.append("Each variant against the plain freeze-15 recipe trained at the same resolution, epochs and "
                     "precision, on the same test slices. Slices of one patient are not "
                     "independent, so McNemar's p is optimistic; the CIs resample patients and the t-test pairs "
                     "the folds.")
    md += ["", *notes]
    if comparison_rows:
        md += ["", markdown_table(comparison_header, comparison_rows)]
    html_part = ("<h2>Cross-validation (CIs resample patients)</h2>" + _html_table(header, rows)
                 + "".join(f"<p>{html.escape(n)}</p>" for n in notes)
                 + (_html_table(comparison_header, comparison_rows) if comparison_rows else ""))
    return "\n".join(md), html_part


def _recipe_name(config: dict[str, Any]) -> str:
    data, train = config["data"], config["train"]
    extras = [x for x, on in (("class-weighted", train["class_weighted_loss"]), ("oversampled", data["oversample"]))
              if on]
    return ", ".join([f"freeze {config['model']['freeze_layers']}", f"{data['preprocessing']} preprocessing",
                      f"{data['augmentation']} augmentation", *extras])


def paper_split_overview(results_root: Path) -> tuple[str, str]:
    """Markdown and HTML of every run on the paper split under ``results_root`` (found by its
    ``run.json``, :func:`brain_tumor.run_record.runs_of_kind`), one row each, and each recipe
    against every run of the plain freeze-15 recipe trained at the same budget
    with the same seed: McNemar per seed and, over all the seeds both have, the mean paired
    difference with a CI resampling patients (:func:`compare_repeats`)."""
    runs = {d.relative_to(results_root).as_posix(): d for d in runs_of_kind(results_root, "paper-split scenario")
            if (d / "config.yaml").is_file()}
    if not runs:
        return "", ""
    configs = {n: with_defaults(yaml.safe_load((d / "config.yaml").read_text())) for n, d in runs.items()}
    rows = []
    for name, d in runs.items():
        m, c = json.loads((d / "metrics.json").read_text()), configs[name]
        rows.append([name, _recipe_name(c), _recipe_text(c), str(c["train"]["seed"]), f"{m['accuracy']:.4f}",
                     f"{m['macro_f1']:.4f}", f"{m['recall']['meningioma']:.4f}"])
    header = ["run", "recipe", "training", "seed", "test accuracy", "macro F1", "meningioma recall"]
    plain: dict[tuple[Any, ...], list[str]] = {}  # every plain run of a budget and seed: each is a draw
    for n, c in configs.items():
        if is_plain_recipe(c):
            plain.setdefault((_budget(c), c["train"]["seed"]), []).append(n)
    groups: dict[tuple[str, tuple[Any, ...] | None], list[tuple[str, str]]] = {}
    for name, c in configs.items():
        if is_plain_recipe(c):
            continue
        for baseline in plain.get((_budget(c), c["train"]["seed"]), []):
            groups.setdefault((_recipe_name(c), _budget(c)), []).append((name, baseline))
    try:
        patient_of = patients_by_path(next(iter(runs.values())))
    except (OSError, ValueError):  # the dataset is not here: no patients to resample
        patient_of = {}
    comparison_rows = []
    for (recipe, _), pairs in groups.items():
        t = compare_repeats([(runs[a], runs[b]) for a, b in pairs], patient_of)
        diffs = [ci_text({k: round(100 * v, 2) + 0.0 for k, v in t[f"mean_{m}_difference_95ci_by_patient"].items()},
                          digits=2) for m in ("accuracy", "meningioma_recall")]
        per_seed = "; ".join(f"{p['a_right_b_wrong']} / {p['a_wrong_b_right']}, p = {p['p_value']:.3g}"
                             for p in t["pairs"])
        seeds = ", ".join(sorted({str(configs[a]["train"]["seed"]) for a, _ in pairs}))
        comparison_rows.append([recipe, _recipe_text(configs[pairs[0][0]]), seeds,
                                f"{t['mean_accuracy_a']:.4f} vs {t['mean_accuracy_b']:.4f}", *diffs, per_seed])
    comparison_header = ["recipe", "training", "seeds", "accuracy (mean over seeds) vs plain recipe",
                         "accuracy difference, points [95% CI]", "meningioma recall difference, points [95% CI]",
                         "right only in recipe / only in plain recipe, McNemar p (per seed)"]
    note = ("Each recipe against every run of the plain freeze-15 recipe (paper preprocessing and augmentation) "
            "trained at the same budget with the same seeds, on the same test slices; differences are means over "
            "those pairs, "
            + ("their CIs resample patients." if patient_of else
               "their CIs resample slices (the dataset's patient ids were not found)."))
    md = ["## Paper split: every run", "", markdown_table(header, rows)]
    html_part = "<h2>Paper split: every run</h2>" + _html_table(header, rows)
    if comparison_rows:
        md += ["", note, "", markdown_table(comparison_header, comparison_rows)]
        html_part += f"<p>{html.escape(note)}</p>" + _html_table(comparison_header, comparison_rows)
    return "\n".join(md), html_part


def cv_grouping(cv_dir: Path) -> str | None:
    """How a CV's folds were made (``official``, ``strict``, ``slice``), from its summary.json, or
    else from the name its splits.json gives its folds (``<grouping>-fold<k>``, written by
    :func:`brain_tumor.data.splits.cv_splits`); None when neither is there."""
    try:
        return str(json.loads((cv_dir / "summary.json").read_text())["grouping"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        name = str(json.loads((cv_dir / "splits.json").read_text())[0]["name"])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    grouping, sep, _ = name.rpartition("-fold")
    return grouping if sep else None


def summarise(y: np.ndarray, probs: np.ndarray, groups: list[str], fold_metrics: list[dict[str, Any]],
              n_boot: int = 2000) -> dict[str, Any]:
    """Pooled metrics, patient-bootstrap CIs, pooled ECE, per-fold mean/std and wall time (training +
    evaluation, seconds, as each fold's metrics.json records them), patient-level accuracy."""
    pooled = classification_metrics(y, probs, list(CLASS_NAMES))
    meningioma = CLASS_NAMES.index("meningioma")
    cis = {name: dict(zip(("value", "low", "high"), st.bootstrap_ci(fn, y, probs, groups, n_boot)))
           for name, fn in [("accuracy", st.accuracy), ("macro_f1", st.macro_f1),
                            ("meningioma_recall", st.class_recall(meningioma)), ("macro_auc", st.macro_auc)]}
    patient_y, patient_p = st.patient_level(y, probs, groups)
    accs = [m["accuracy"] for m in fold_metrics]
    return {"pooled": pooled, "bootstrap_95ci_by_patient": cis,
            "fold_accuracy": accs, "fold_accuracy_mean": float(np.mean(accs)), "fold_accuracy_std": float(np.std(accs)),
            "fold_macro_f1_mean": float(np.mean([m["macro_f1"] for m in fold_metrics])),
            "ece": expected_calibration_error(probs, y),
            "fold_seconds": [fold_seconds(m) for m in fold_metrics],
            "patient_level": {"n_patients": len(patient_y), "accuracy": st.accuracy(patient_y, patient_p)}}


def summary_markdown(summary: dict[str, Any]) -> str:
    """A short table of the CV summary."""
    rows = [f"| {k} | {v['value']:.4f} | [{v['low']:.4f}, {v['high']:.4f}] |"
            for k, v in summary["bootstrap_95ci_by_patient"].items()]
    return "\n".join([
        f"# {summary['grouping']} cross-validation ({summary['folds']} folds)", "",
        f"Per-fold accuracy: {', '.join(f'{a:.4f}' for a in summary['fold_accuracy'])} "
        f"(mean {summary['fold_accuracy_mean']:.4f} ± {summary['fold_accuracy_std']:.4f}); "
        f"patient-level accuracy {summary['patient_level']['accuracy']:.4f} "
        f"over {summary['patient_level']['n_patients']} patients; pooled ECE {summary['ece']:.4f}.",
        f"Wall time per fold (training + evaluation): {_seconds_text(summary['fold_seconds'])}.", "",
        "| metric (pooled) | value | 95% CI, patients resampled |", "|---|---|---|", *rows, ""])


def _seconds_text(seconds: list[float | None]) -> str:
    return ", ".join("?" if s is None else f"{s / 60:.1f} min" for s in seconds)
