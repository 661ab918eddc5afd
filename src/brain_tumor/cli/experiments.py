"""Training runs and their reports: ``reproduce``, ``train``, ``cv``, ``compare``, ``leaderboard``, ``report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from brain_tumor.cli.common import ConfigOpt, SetOpt, _config, _fail, _fetch, _output


def reproduce(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    download: Annotated[bool, typer.Option(
        help="First fetch the dataset and weights that are missing (as `brain-tumor fetch`).")] = False,
    quick: Annotated[bool, typer.Option(
        help="A first look: both scenarios at 128 px for 3 epochs, no trust step (--set still applies after it).")]
    = False,
    resume: Annotated[bool, typer.Option(
        help="Continue the run in --output/--work-dir (finished scenarios are kept, an interrupted one "
             "resumes from its last epoch); without it, a folder holding an earlier run is refused.")] = False,
    results_dir: Annotated[Path | None, _output(
        "Metrics, figures and report (default: runs/paper-split/report, runs/paper-split-quick/report "
        "with --quick).", "--results-dir")] = None,
    work_dir: Annotated[Path | None, typer.Option(
        help="Checkpoints and TensorBoard logs (default: runs/paper-split, runs/paper-split-quick).")] = None,
    reference: Annotated[Path, typer.Option(
        help="Committed results to compare with: every finished run of the same recipe and split in this "
             "tree, whatever its seed or precision.")] = Path("results"),
    scenario: Annotated[list[int] | None, typer.Option(help="Keras layers to freeze; repeatable.")] = None,
    trust: Annotated[bool | None, typer.Option(
        help="Also calibrate, choose the refer threshold and score Grad-CAM (default: on, off with --quick).")]
    = None,
) -> None:
    """Reproduce the paper: train both freeze scenarios on the paper split into a fresh run folder,
    write the comparison report, and say how far each lands from the committed reference runs of
    the same recipe against their seed-to-seed spread.

    Example: brain-tumor reproduce --quick   (then: brain-tumor reproduce; on a machine without ../shared:
    brain-tumor reproduce --download)
    """
    from brain_tumor.reference_check import check_line
    from brain_tumor.reproduce import QUICK_SETTINGS, SCENARIOS, ReproduceError
    from brain_tumor.reproduce import reproduce as run

    name = "paper-split-quick" if quick else "paper-split"
    results_dir = results_dir or Path("runs") / name / "report"
    work_dir = work_dir or Path("runs") / name
    cfg = _config(config, [*(QUICK_SETTINGS if quick else ()), *(overrides or [])], check_assets=not download)
    if download:
        from brain_tumor.fetch import FIGSHARE_API, KERAS_RESNET50_MD5, KERAS_RESNET50_URL

        _fetch(cfg, True, cfg.model.weights == "keras", FIGSHARE_API, KERAS_RESNET50_URL, KERAS_RESNET50_MD5, 3)
    try:
        runs, checks = run(cfg, results_dir, work_dir, tuple(scenario or SCENARIOS),
                           (not quick) if trust is None else trust, resume, reference)
    except (ReproduceError, ValueError, OSError) as exc:
        _fail(str(exc))
    for n, m in runs.items():
        typer.echo(f"freeze {n}: test accuracy {m['accuracy']:.4f}, meningioma recall {m['recall']['meningioma']:.3f}")
    for n, c in checks.items():
        typer.echo(check_line(f"freeze {n}", c))
    typer.echo(f"report: {results_dir / 'report.html'}")


def train(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    results_dir: Annotated[Path, _output("Run folder for metrics and figures.", "--results-dir")] = Path(
        "runs/train/report"),
    work_dir: Annotated[Path, typer.Option(help="Checkpoints.")] = Path("runs/train"),
) -> None:
    """Train and evaluate one run on the paper split (freeze from model.freeze_layers).

    Example: brain-tumor train --set model.freeze_layers=15 --set train.max_epochs=12
    """
    from brain_tumor.scenario import run_scenario
    from brain_tumor.training.fit import prepare_data

    cfg = _config(config, overrides)
    try:
        data = prepare_data(cfg, results_dir / "split.json")
        metrics = run_scenario(cfg, data, results_dir, work_dir)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    typer.echo(f"test accuracy {metrics['accuracy']:.4f}; checkpoint {work_dir / 'model.pt'}")


def cv(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    grouping: Annotated[str, typer.Option(help="official | strict | slice (leaky, for comparison).")] = "official",
    results_dir: Annotated[Path | None, _output(
        "Default runs/cv/<grouping>/report (the committed copies: --output results/cv/NAME).", "--results-dir")]
    = None,
    work_dir: Annotated[Path | None, typer.Option(help="Default runs/cv/<grouping>.")] = None,
    fold: Annotated[list[int] | None, typer.Option(help="Run only these folds; repeatable.")] = None,
) -> None:
    """5-fold cross-validation, resumable; summary with patient-bootstrap CIs.

    Example: brain-tumor cv --grouping official --set data.image_size=224
    """
    from brain_tumor.cv import run_cv

    cfg = _config(config, overrides)
    results = results_dir or Path("runs/cv") / grouping / "report"
    try:
        summary = run_cv(cfg, grouping, results, work_dir or Path("runs/cv") / grouping, fold)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    ci = summary["bootstrap_95ci_by_patient"]["accuracy"]
    typer.echo(f"accuracy {ci['value']:.4f} [{ci['low']:.4f}, {ci['high']:.4f}] -> {results / 'summary.md'}")


def compare(
    run_a: Annotated[Path, typer.Argument(help="A run or CV results folder.")],
    run_b: Annotated[Path, typer.Argument(help="Another, on the same test slices.")],
    also_a: Annotated[list[Path] | None, typer.Option(
        help="A run of A's recipe with another seed; repeat, in the order of --also-b.")] = None,
    also_b: Annotated[list[Path] | None, typer.Option(
        help="B's run with that seed. With these, the report is the mean paired difference over seeds.")] = None,
) -> None:
    """McNemar's test between two runs on their shared test slices (for CV folders also the
    paired differences in accuracy and meningioma recall, with CIs resampling patients).

    Example: brain-tumor compare results/cv/official-freeze-15 results/cv/official-freeze-30
    """
    from brain_tumor.comparison import compare as mcnemar_compare
    from brain_tumor.comparison import compare_repeats, dataset_config, patients_by_path

    try:
        # the dataset (for patients) from either folder's config.yaml (an ensemble's: its members')
        patient_of = next((patients_by_path(d) for d in (run_a, run_b) if dataset_config(d).is_file()), None)
        if also_a or also_b:
            if len(also_a or []) != len(also_b or []):
                raise ValueError("give as many --also-a as --also-b runs (one pair per seed)")
            if patient_of is None:
                raise ValueError(f"--also-a/--also-b need run folders with their config.yaml; {run_a} has none")
            result = compare_repeats([(run_a, run_b), *zip(also_a or [], also_b or [])], patient_of)
        else:
            result = mcnemar_compare(run_a, run_b, patient_of)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps(result, indent=2))


def leaderboard(
    cv_root: Annotated[Path, typer.Argument(help="The folder holding the CV folders, e.g. results/cv.")],
    output: Annotated[Path | None, _output(
        help="Write OUTPUT.md and OUTPUT.json (default: CV_ROOT/leaderboard).")] = None,
) -> None:
    """The recipe table: every patient-wise CV, sorted by pooled accuracy, with its paired
    difference against the paper recipe at the same resolution (CIs resample patients), meningioma
    recall, macro-F1, ECE, patient-level accuracy and minutes per fold.

    Example: brain-tumor leaderboard results/cv
    """
    from brain_tumor import atomic
    from brain_tumor import leaderboard as board

    output = output or cv_root / "leaderboard"
    try:
        entries = board.leaderboard(cv_root)
    except (ValueError, OSError, KeyError) as exc:
        _fail(str(exc))
    atomic.write_text(output.with_suffix(".md"), board.markdown(entries))
    atomic.write_json(board.to_json(entries), output.with_suffix(".json"))
    for e in entries:
        typer.echo(f"{100 * e.accuracy['value']:.2f}%  {len(e.folds)} folds  {e.name}")
    typer.echo(f"table: {output.with_suffix('.md')}")


def ensemble(
    members: Annotated[list[Path], typer.Argument(
        help="Two or more `brain-tumor cv` results folders of the same folds.")],
    output: Annotated[Path, _output(help="The ensemble's CV folder (beside its members, for the leaderboard).")],
) -> None:
    """Score an ensemble on the patient-wise protocol: each fold's held-out slices answered by the mean
    of the members' fold models' probabilities (every one trained without those patients), from the
    members' committed predictions; writes a CV folder that compare and leaderboard read.

    Example: brain-tumor ensemble results/cv/A results/cv/B --output results/cv/ensemble-A-B
    """
    from brain_tumor.cv_ensemble import EnsembleInputError, ensemble_cv

    try:
        summary = ensemble_cv(members, output)
    except (EnsembleInputError, ValueError, OSError, KeyError) as exc:
        _fail(str(exc))
    ci = summary["bootstrap_95ci_by_patient"]["accuracy"]
    typer.echo(f"pooled accuracy {100 * ci['value']:.2f}% [{100 * ci['low']:.2f}, {100 * ci['high']:.2f}] over "
               f"{summary['folds']} folds -> {output / 'summary.md'}")


def report(
    results_dir: Annotated[Path | None, typer.Argument(
        help="The reproduction's results folder, rebuilt in place.", show_default="runs/paper-split/report")] = None,
    old_name: Annotated[Path | None, typer.Option(
        "--results-dir", help="The results folder by its earlier name (old scripts).")] = None,
) -> None:
    """Rebuild comparison.md and report.html from finished runs (after `trust`, say).

    Example: brain-tumor report runs/paper-split/report
    """
    from brain_tumor.reproduce import rebuild_report

    if results_dir is not None and old_name is not None:
        _fail("give the results folder once: as the argument or as --results-dir")
    results_dir = results_dir or old_name or Path("runs/paper-split/report")
    if not results_dir.is_dir():
        _fail(f"{results_dir}: no such results folder")
    rebuild_report(results_dir)
    typer.echo(f"report: {results_dir / 'report.html'}")
