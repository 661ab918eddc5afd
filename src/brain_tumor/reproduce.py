"""Reproduce the paper: both freeze scenarios on the paper split, every table and figure."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brain_tumor.atomic import write_json, write_text
from brain_tumor.config import RunConfig, read_run_config
from brain_tumor.evaluation.plots import plot_image_grid
from brain_tumor.evaluation.report import comparison_html, comparison_markdown
from brain_tumor.reference_check import check_against_reference, check_line, find_reference_runs
from brain_tumor.scenario import run_scenario
from brain_tumor.training.fit import PreparedData, prepare_data
from brain_tumor.transforms import train_preset

SCENARIOS = (30, 15)
# a faithful first look: both scenarios, the paper's recipe, at 128 px for 3 epochs (no trust step)
QUICK_SETTINGS = ("data.image_size=128", "train.max_epochs=3")


class ReproduceError(ValueError):
    """A reproduction that cannot start as asked; the message is one line."""


def check_fresh(results_dir: Path, work_dir: Path, scenarios: tuple[int, ...]) -> None:
    """Refuse to start a new reproduction over an earlier one (its results would be skipped or
    its checkpoints resumed): that takes ``--resume``."""
    for n in scenarios:
        for folder in (results_dir / f"freeze-{n}", work_dir / f"freeze-{n}"):
            if folder.is_dir() and any(folder.iterdir()):
                raise ReproduceError(f"{folder} holds an earlier run: continue it with --resume, or start anew "
                                     f"with another --output and --work-dir")


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


def reproduce(config: RunConfig, results_dir: Path, work_dir: Path, scenarios: tuple[int, ...] = SCENARIOS,
              trust: bool = True, resume: bool = False,
              reference: Path | None = None) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """Train every scenario into fresh folders (``resume``: continue the runs found there),
    optionally calibrate/explain each (``trust``), compare each with the runs of the same recipe
    under ``reference`` (``reference_check.json``), and write the comparison markdown and HTML
    report. Returns the metrics and the reference check of each scenario."""
    from brain_tumor.evaluation.trust import run_trust

    if not resume:
        check_fresh(results_dir, work_dir, scenarios)
    data = prepare_data(config, results_dir / "split.json")
    figures = draw_sample_grids(data, results_dir / "figures", config.data.seed)
    runs: dict[int, dict[str, Any]] = {}
    for n in scenarios:
        scenario_config = dataclasses.replace(config, model=dataclasses.replace(config.model, freeze_layers=n))
        run_dir, scenario_work = results_dir / f"freeze-{n}", work_dir / f"freeze-{n}"
        runs[n] = run_scenario(scenario_config, data, run_dir, scenario_work, kind="paper-split scenario")
        if trust and not (run_dir / "trust" / "trust.json").is_file() and (scenario_work / "model.pt").is_file():
            run_trust(scenario_work / "model.pt", run_dir, data.images, data.labels, [r.box for r in data.records],
                      data.split.val, data.split.test)
        write_report(runs, results_dir, figures)
    checks = reference_checks(runs, results_dir, reference)
    write_report(runs, results_dir, figures)
    return runs, checks


def reference_checks(runs: dict[int, dict[str, Any]], results_dir: Path,
                     reference: Path | None) -> dict[int, dict[str, Any]]:
    """Each scenario against the reference runs of its recipe under ``reference`` (none: skipped);
    written to ``reference_check.json``."""
    checks: dict[int, dict[str, Any]] = {}
    for n, metrics in runs.items():
        run_dir = results_dir / f"freeze-{n}"
        found = (find_reference_runs(reference, read_run_config(run_dir), run_dir)
                 if reference is not None and reference.is_dir() and (run_dir / "config.yaml").is_file() else [])
        checks[n] = check_against_reference(float(metrics["accuracy"]), int(metrics["n_test"]), found)
    write_json({"reference": str(reference) if reference is not None else None,
                "scenarios": {f"freeze-{n}": c for n, c in checks.items()}}, results_dir / "reference_check.json")
    return checks


def extra_sections(runs: dict[int, dict[str, Any]], results_dir: Path) -> tuple[str, str]:
    """Markdown and HTML for what exists beyond the paper: McNemar between scenarios, trust."""
    from brain_tumor.comparison import compare
    from brain_tumor.cv_report import cv_overview, paper_split_overview

    md, html_parts = [], []
    check_file = results_dir / "reference_check.json"
    if check_file.is_file():
        checks = json.loads(check_file.read_text())["scenarios"]
        lines = [check_line(name, c) for name, c in checks.items()]
        md += ["## Against the committed reference runs", *[f"- {line}" for line in lines]]
        html_parts.append("<h2>Against the committed reference runs</h2><ul>"
                          + "".join(f"<li>{line}</li>" for line in lines) + "</ul>")
    if {30, 15} <= set(runs):
        test = compare(results_dir / "freeze-30", results_dir / "freeze-15")
        line = (f"McNemar (exact) freeze-30 vs freeze-15 on the {test['n']} test slices: "
                f"{test['a_right_b_wrong']} slices right only with freeze-30, {test['a_wrong_b_right']} right only "
                f"with freeze-15, p = {test['p_value']:.3g}.")
        md += ["## Do the scenarios differ?", line]
        html_parts.append(f"<h2>Do the scenarios differ?</h2><p>{line}</p>")
    for n in sorted(runs, reverse=True):
        trust = results_dir / f"freeze-{n}" / "trust" / "trust.json"
        if trust.is_file():
            t = json.loads(trust.read_text())
            c, loc = t["calibration"], t["localisation"]
            line = (f"freeze {n}: temperature {c['temperature']:.3f}, test ECE {c['ece_before']:.4f} -> "
                    f"{c['ece_after']:.4f}; refer rate {c['test_referred_rate']:.1%} for a {c['target_risk']:.0%} "
                    f"target error (error among answered {c['test_error_answered']:.1%}); Grad-CAM pointing game "
                    f"{loc['pointing_game']:.1%}, CAM energy in box {loc['energy_in_box']:.1%}.")
            md += [f"## Calibration, abstention, localisation (freeze {n})", line]
            html_parts.append(f"<h2>Calibration, abstention, localisation (freeze {n})</h2><p>{line}</p>")
    from brain_tumor.robustness import robustness_overview

    for overview in (paper_split_overview(results_dir.parent), cv_overview(results_dir.parent / "cv"),
                     robustness_overview(results_dir.parent / "robustness")):
        if overview[0]:
            md.append(overview[0])
            html_parts.append(overview[1])
    return "\n\n".join(md), "\n".join(html_parts)


def write_report(runs: dict[int, dict[str, Any]], results_dir: Path, figures: list[Path]) -> None:
    """comparison.md and report.html from finished runs (and trust results where present)."""
    md, html_extra = extra_sections(runs, results_dir)
    write_text(results_dir / "comparison.md", comparison_markdown(runs) + ("\n" + md + "\n" if md else ""))
    run_figures = [results_dir / f"freeze-{n}" / sub / name for n in sorted(runs, reverse=True)
                   for sub, name in (("figures", "confusion_matrix.png"), ("figures", "roc.png"),
                                     ("figures", "curves.png"), ("trust", "reliability.png"),
                                     ("trust", "risk_coverage.png"), ("trust", "gradcam_gallery.png"))]
    write_text(results_dir / "report.html", comparison_html(runs, figures + run_figures, html_extra))


def rebuild_report(results_dir: Path) -> None:
    """Re-write comparison.md and report.html from the run folders on disk."""
    finished = [d for d in sorted(results_dir.glob("freeze-*"))
                if (d / "metrics.json").is_file() and (d / "config.yaml").is_file()]
    runs = {int(read_run_config(d)["model"]["freeze_layers"]):  # the run's own config
            json.loads((d / "metrics.json").read_text()) for d in finished}
    figures = [results_dir / "figures" / "resized_examples.png", results_dir / "figures" / "augmented_examples.png"]
    write_report(runs, results_dir, figures)
