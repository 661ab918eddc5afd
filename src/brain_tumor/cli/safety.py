"""Fitting a model's safety nets: ``trust``, ``calibrate``, ``no-tumour-gate``, ``ood``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from brain_tumor.cli.common import CheckpointOpt, FoldOpt, SplitOpt, _checkpoint_meta, _fail, _model_data, _output


def trust(
    checkpoint: CheckpointOpt,
    run_dir: Annotated[Path, typer.Option(help="The run's results folder (metrics.json; trust/ is written there).")],
    split: Annotated[Path | None, typer.Option(
        help="split.json, or a CV splits.json with --fold (default: beside the run folder).")] = None,
    fold: FoldOpt = None,
    target_risk: Annotated[float, typer.Option(help="Error rate allowed among answered cases.")] = 0.02,
    tolerance_px: Annotated[int, typer.Option(help="Pointing-game tolerance around the box.")] = 15,
) -> None:
    """Calibrate (temperature on validation), choose the refer threshold, score Grad-CAM against
    tumour boxes on test, write calibration.json (beside the model too) and the model card.

    Example: brain-tumor trust -m runs/paper-split/freeze-15/model.pt --run-dir runs/paper-split/report/freeze-15
    (a CV fold: -m runs/cv/fold-1/model.pt --run-dir results/cv/NAME/fold-1 --fold 1)
    """

    from brain_tumor.data.splits import load_split
    from brain_tumor.evaluation.trust import run_trust
    meta = _checkpoint_meta(checkpoint)
    records, images, labels = _model_data(checkpoint)
    try:
        s = load_split(split or run_dir.parent / ("splits.json" if fold else "split.json"), fold)
    except (ValueError, OSError, KeyError) as exc:
        _fail(str(exc))
    boxes = [r.box for r in records]
    pipeline = meta["preprocessing"].get("pipeline", "paper")
    if pipeline != "paper":  # boxes follow the crop and padding of the pipeline
        from brain_tumor.data.imageio import read_slice
        from brain_tumor.data.preprocess import map_box

        test = set(s.test)
        boxes = [map_box(boxes[i], read_slice(records[i].path), pipeline) if i in test and boxes[i] else None
                 for i in range(len(records))]
    from brain_tumor.evaluation.model_card import CV_FOLD, PAPER_SPLIT

    result = run_trust(checkpoint, run_dir, images, labels, boxes, s.val, s.test,
                       target_risk, tolerance_px, CV_FOLD if fold else PAPER_SPLIT)
    c, loc = result["calibration"], result["localisation"]
    typer.echo(f"T={c['temperature']:.3f} ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}; "
               f"referred {c['test_referred_rate']:.1%}; pointing game {loc['pointing_game']:.1%}")


def calibrate(
    cv_dir: Annotated[Path, typer.Argument(help="A `brain-tumor cv` results folder (fold-*/test_predictions.csv).")],
    output: Annotated[Path, _output(help="Where calibration.json and the cross-fitted report go.")] = Path(
        "runs/calibrate"),
    confidence: Annotated[float, typer.Option(
        min=0.5, max=0.999, help="Stated coverage of the prediction sets.")] = 0.95,
    target_risk: Annotated[float, typer.Option(
        min=0.001, max=0.5, help="Error rate allowed among answered slices.")] = 0.02,
    class_conditional: Annotated[bool, typer.Option(
        help="Coverage per true class (Mondrian), not only on average over classes.")] = True,
    work_dir: Annotated[Path | None, typer.Option(
        help="The CV's fold models (its --work-dir): also fit the OOD threshold on out-of-fold scores.")] = None,
    flag_rate: Annotated[float, typer.Option(
        min=0.001, max=0.5, help="Share of new patients' slices the OOD threshold flags.")] = 0.05,
    k: Annotated[int, typer.Option(min=1, help="Neighbour whose distance is the OOD score.")] = 10,
) -> None:
    """Fit temperature, referral threshold and conformal prediction sets on a patient-wise CV's
    out-of-fold predictions (with --work-dir also the OOD threshold, on the fold models' scores of
    their test patients); judge them by cross-fitting over the folds; write calibration.json.

    Example: brain-tumor calibrate results/cv/official-freeze-15-bf16-e12 --output runs/calibrate
    then: brain-tumor predict scan.jpg -m model.pt --calibration runs/calibrate/calibration.json"""
    from brain_tumor.calibrate import CalibrationInputError, run_calibrate

    try:
        summary = run_calibrate(cv_dir, output, confidence, target_risk, class_conditional,
                                work_dir=work_dir, flag_rate=flag_rate, k=k)
    except (CalibrationInputError, OSError, ValueError, KeyError) as exc:
        _fail(str(exc))
    c, e = summary["conformal"], summary
    typer.echo(f"ECE {e['ece_before']['value']:.4f} -> {e['ece_after']['value']:.4f}; "
               f"sets at {confidence:.0%}: coverage {100 * c['coverage']['value']:.2f}%, "
               f"mean size {c['mean_set_size']:.3f}; answered {100 * e['referral']['answered']['value']:.1f}% "
               f"-> {output / 'calibration_cv.md'}, {output / 'calibration.json'}")
    if "ood" in summary:
        o = summary["ood"]["summary"]["oof"]
        typer.echo(f"OOD threshold {summary['ood']['threshold']:.4f}: cross-fitted, "
                   f"{100 * o['test_flagged_pooled']:.1f}% of new patients' slices flagged "
                   f"(target {100 * flag_rate:.1f}%)")


def no_tumour_gate(
    checkpoint: CheckpointOpt,
    splits: Annotated[Path, typer.Option("--split", "--splits", help="The CV's splits.json the model was trained on.")],
    fold: Annotated[int, typer.Option(min=1, help="The model's CV fold (1-based).")],
    data: Annotated[Path | None, typer.Option(help="The tumour dataset (default: the configured Figshare).")] = None,
    no_tumour_data: Annotated[Path, typer.Option(help="Slices without a tumour: a folder with manifest.csv "
                                                      "(label no_tumour, group), or a class-per-folder tree.")] = Path(
        "../shared/data/br35h-no-tumour"),
    output: Annotated[Path, _output(help="Where gate.json and no_tumour.json/.md go.")] = Path("runs/no-tumour"),
    per_class: Annotated[int, typer.Option(min=10, help="Training slices per tumour class for the gate.")] = 200,
    threshold: Annotated[float, typer.Option(min=0.01, max=0.99, help="P(no tumour) that answers no tumour.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of the sampling, styles and group folds.")] = 0,
    erased_negatives: Annotated[bool, typer.Option(
        help="Also learn from the training slices with the tumour erased (as no tumour) and erased elsewhere (as "
             "tumour), deploy that variant, and judge every variant on test slices erased by inpainting.")] = False,
) -> None:
    """Fit the model's "no tumour" gate and measure it, with the collection shortcut controlled.

    Example: brain-tumor no-tumour-gate -m runs/cv/NAME/fold-1/model.pt --split results/cv/NAME/splits.json
    --fold 1 --output runs/no-tumour; then copy gate.json beside model.pt (predict and serve find it there)."""
    from brain_tumor.config import RunConfig
    from brain_tumor.no_tumour_gate import run_no_tumour_gate

    _checkpoint_meta(checkpoint)
    for path in (splits, no_tumour_data):
        if not path.exists():
            _fail(f"{path}: no such file or folder")
    try:
        summary = run_no_tumour_gate(checkpoint, data or Path(RunConfig().data.root), splits, fold, no_tumour_data,
                                     output, output / "cache", per_class, threshold=threshold, seed=seed,
                                     erased_negatives=erased_negatives)
    except (ValueError, OSError, IndexError) as exc:
        _fail(str(exc))
    typer.echo(Path(output / "no_tumour.md").read_text().strip())
    typer.echo(f"-> {output / 'gate.json'} ({len(summary['results'])} variants measured)")


def ood(
    checkpoint: CheckpointOpt,
    split: SplitOpt,
    fold: FoldOpt = None,
    output: Annotated[Path, _output(help="Folder for ood.json/.md.")] = Path("runs/ood"),
    flag_rate: Annotated[float, typer.Option(help="Share of in-distribution validation slices flagged.")] = 0.05,
    k: Annotated[int, typer.Option(help="Neighbour whose distance is the score.")] = 10,
) -> None:
    """Fit the out-of-distribution flag (kNN distance in feature space) on the training slices, set its
    threshold on validation, store it beside the checkpoint (ood_bank.safetensors), and report flag rates.

    Example: brain-tumor ood -m runs/train/model.pt --split runs/train/report/split.json
    """
    from brain_tumor.data.splits import load_split
    from brain_tumor.robustness import fit_ood

    try:
        _, images, _ = _model_data(checkpoint)
        s = load_split(split, fold)
    except (ValueError, OSError, KeyError) as exc:
        _fail(str(exc))
    result = fit_ood(checkpoint, images, s.train, s.val, s.test, output, flag_rate, k)
    rates = result["flag_rates"]["knn"]
    typer.echo(f"flagged: test {rates['test']:.1%}, must-refuse {rates['all_must_refuse']:.1%} -> {output / 'ood.md'}")
