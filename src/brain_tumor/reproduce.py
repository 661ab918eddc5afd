"""Reproduce the paper: both freeze scenarios on the paper split, every table and figure."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brain_tumor.config import RunConfig
from brain_tumor.evaluation.plots import plot_image_grid
from brain_tumor.evaluation.report import comparison_html, comparison_markdown
from brain_tumor.scenario import run_scenario
from brain_tumor.training.fit import PreparedData, prepare_data
from brain_tumor.transforms import train_preset

SCENARIOS = (30, 15)


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
              scenarios: tuple[int, ...] = SCENARIOS, trust: bool = True) -> dict[int, dict[str, Any]]:
    """Run every scenario (resumable), optionally calibrate/explain each (``trust``), and write
    the comparison markdown and HTML report."""
    from brain_tumor.evaluation.trust import run_trust

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
    return runs


def extra_sections(runs: dict[int, dict[str, Any]], results_dir: Path) -> tuple[str, str]:
    """Markdown and HTML for what exists beyond the paper: McNemar between scenarios, trust."""
    from brain_tumor.comparison import compare
    from brain_tumor.cv_report import cv_overview, paper_split_overview

    md, html_parts = [], []
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
    (results_dir / "comparison.md").write_text(comparison_markdown(runs) + ("\n" + md + "\n" if md else ""))
    run_figures = [results_dir / f"freeze-{n}" / sub / name for n in sorted(runs, reverse=True)
                   for sub, name in (("figures", "confusion_matrix.png"), ("figures", "roc.png"),
                                     ("figures", "curves.png"), ("trust", "reliability.png"),
                                     ("trust", "risk_coverage.png"), ("trust", "gradcam_gallery.png"))]
    (results_dir / "report.html").write_text(comparison_html(runs, figures + run_figures, html_extra))


def rebuild_report(results_dir: Path) -> None:
    """Re-write comparison.md and report.html from the run folders on disk."""
    runs = {int(d.name.split("-")[1]): json.loads((d / "metrics.json").read_text())
            for d in sorted(results_dir.glob("freeze-*")) if (d / "metrics.json").is_file()}
    figures = [results_dir / "figures" / "resized_examples.png", results_dir / "figures" / "augmented_examples.png"]
    write_report(runs, results_dir, figures)
