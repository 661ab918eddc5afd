"""Measuring a model: ``evaluate``, ``shift-test``, ``shortcut-test``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from brain_tumor import atomic
from brain_tumor.cli.common import (
    BnPriorOpt,
    CalibrationOpt,
    CheckpointOpt,
    FoldOpt,
    GateOpt,
    ModelsOpt,
    ScopeOpt,
    SplitOpt,
    TtaOpt,
    _fail,
    _load_fast_predictor,
    _model_data,
    _named_models,
    _output,
)

DEFAULT_SPLIT = Path("results/paper-split/split.json")  # the committed paper split, read only


def evaluate(
    checkpoint: CheckpointOpt,
    data: Annotated[Path | None, typer.Option(
        help="With --split: the dataset folder the split indexes (default: the checkpoint's data.root). Alone: "
             "a labelled collection to evaluate on, a CSV of path,label, a folder with manifest.csv, or "
             "class-per-folder (glioma_tumor/, no_tumor/, normal/, ...).")] = None,
    split: Annotated[Path | None, typer.Option(
        help="split.json of the run, or a CV splits.json with --fold; its test part is scored (without --data, "
             f"default: the paper split, {DEFAULT_SPLIT}).")] = None,
    fold: FoldOpt = None,
    output: Annotated[Path, _output(help="Where metrics.json goes.")] = Path("runs/evaluate"),
    calibration: CalibrationOpt = None,
    gate: GateOpt = None,
    tta: TtaOpt = "none",
    scope_check: ScopeOpt = True,
    adapt_bn: Annotated[bool, typer.Option(
        help="On a collection: re-estimate the network's BatchNorm statistics on its own images first "
             "(test-time adaptation to its source; labels unused; served by PyTorch).")] = False,
    bn_prior: BnPriorOpt = 0.0,
) -> None:
    """Evaluate a checkpoint on the test part of a saved split (--split, with --data the dataset
    folder), or on any labelled collection (--data alone: as `predict` answers, calibration.json
    and gate.json included).

    Example: brain-tumor evaluate -m runs/train/model.pt --data ../shared/data/br35h-no-tumour --output runs/evaluate
    (a split's test part: brain-tumor evaluate -m runs/train/model.pt --split runs/train/report/split.json;
    a CV fold's: brain-tumor evaluate -m runs/cv/NAME/fold-1/model.pt --split results/cv/NAME/splits.json --fold 1)
    """
    if bn_prior and not adapt_bn:
        _fail("--bn-prior applies with --adapt-bn")
    if fold is not None and split is None:
        _fail("--fold picks a fold of a CV splits.json: give it with --split")
    if data is not None and split is None:
        _evaluate_collection(checkpoint, data, output, calibration, gate, tta, scope_check,
                             bn_prior if adapt_bn else None)
        return
    if calibration is not None or gate is not None or tta != "none" or adapt_bn:
        _fail("--calibration, --gate, --tta and --adapt-bn apply with --data alone, a collection (a split's test "
              "part is scored as the model alone)")
    _evaluate_split(checkpoint, split or DEFAULT_SPLIT, fold, data, output)


def _evaluate_split(checkpoint: Path, split: Path, fold: int | None, data: Path | None, output: Path) -> None:
    from brain_tumor.data.splits import load_split
    from brain_tumor.evaluation.run_eval import evaluate_checkpoint, write_json
    _, images, labels = _model_data(checkpoint, data, "--data")
    try:
        test = load_split(split, fold).test
    except (ValueError, OSError, KeyError, IndexError) as exc:
        _fail(f"{split}: cannot read the split ({exc})")
    metrics = evaluate_checkpoint(checkpoint, images, labels, test).metrics
    write_json(metrics, output / "metrics.json")
    typer.echo(f"accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f} -> {output / 'metrics.json'}")
    if (answered := metrics.get("tumour_map")) is not None:
        typer.echo(f"with the tumour map's answer: {answered['called_no_tumour']:.2%} called no tumour, "
                   f"{answered['accuracy_with_map_answer']:.2%} answered right")


def _evaluate_collection(checkpoint: Path, data: Path, output: Path, calibration: Path | None,
                         gate: Path | None, tta: str = "none", scope_check: bool = True,
                         bn_prior: float | None = None) -> None:

    from brain_tumor.config import portable_path
    from brain_tumor.evaluation.external import (
        CollectionError,
        collection_markdown,
        draw_collection_figures,
        outcome_rows,
        predict_items,
        read_collection,
        summarise_collection,
    )
    from brain_tumor.evaluation.run_eval import write_json

    try:
        items = read_collection(data)
    except (CollectionError, OSError) as exc:
        _fail(str(exc))
    predictor = _load_fast_predictor(checkpoint, "auto", "auto", None, None, calibration, gate, tta)
    predictor.scope_check = scope_check
    if bn_prior is not None:
        from brain_tumor.bn_adaptation import adapt_to_files

        try:
            predictor = adapt_to_files(predictor, [str(item.path) for item in items], bn_prior)
        except ValueError as exc:
            _fail(str(exc))
    answers = predict_items(predictor, items)
    summary = summarise_collection(items, answers, predictor.class_names)
    output.mkdir(parents=True, exist_ok=True)
    write_json({**summary, "checkpoint": portable_path(checkpoint), "data": portable_path(data),
                "compute": predictor.compute, "bn_adapted": bn_prior is not None, "bn_prior": bn_prior},
               output / "metrics.json")
    rows = outcome_rows(items, answers)
    atomic.write_dict_csv(output / "outcomes.csv", rows)
    atomic.write_text(output / "summary.md", collection_markdown(summary))
    draw_collection_figures(items, answers, summary, output)
    typer.echo(collection_markdown(summary).strip())
    typer.echo(f"-> {output / 'summary.md'}")


def shift_test(
    checkpoint: ModelsOpt,
    split: SplitOpt,
    fold: FoldOpt = None,
    output: Annotated[Path, _output(help="Folder for shift.json/.md/.png.")] = Path("runs/shift"),
    seed: Annotated[int, typer.Option(help="Seed of the random parts of the shifts.")] = 0,
    adapt_bn: Annotated[bool, typer.Option(
        help="Also score each model with its BatchNorm statistics re-estimated on each set of slices.")] = False,
    bn_prior: BnPriorOpt = 0.0,
    shift: Annotated[list[str] | None, typer.Option(
        help="Only this shift family (repeat for several; default: all): gamma, contrast, resolution, framing, "
             "rotation, noise, jpeg, bit_depth.")] = None,
) -> None:
    """Accuracy on the held-out test slices under controlled shifts (contrast, gamma, resolution,
    framing, rotation, noise, JPEG, bit depth), for each model (with --adapt-bn, also adapted to
    each shifted set: test-time BatchNorm adaptation, NAME+bn-adapted).

    Example: brain-tumor shift-test -m paper=runs/a/model.pt -m robust=runs/b/model.pt --split S.json --fold 1
    """
    import numpy as np

    from brain_tumor.data.manifest import CLASS_NAMES
    from brain_tumor.data.splits import load_split
    from brain_tumor.robustness import draw_preprocessing_steps, run_shift_test

    models = _named_models(checkpoint)
    try:
        records, _, _ = _model_data(next(iter(models.values())))
        idx = load_split(split, fold).test
    except (ValueError, OSError, KeyError) as exc:
        _fail(str(exc))
    paths = [records[i].path for i in idx]
    labels = np.array([CLASS_NAMES.index(records[i].label) for i in idx])
    groups = [records[i].patient_id or records[i].path for i in idx]  # no patient id: each slice its own
    if bn_prior and not adapt_bn:
        _fail("--bn-prior applies with --adapt-bn")
    try:
        results = run_shift_test(models, paths, labels, groups, output, seed, [records[i].result_name for i in idx],
                                 bn_prior if adapt_bn else None, shift)
    except ValueError as exc:  # an unknown shift family, or too few test slices to adapt to
        _fail(str(exc))
    draw_preprocessing_steps([paths[i] for i in np.linspace(0, len(paths) - 1, 4).astype(int)],
                             output / "preprocessing_steps.png")
    for name, r in results.items():
        typer.echo(f"{name}: clean {r['clean']:.4f}; " + ", ".join(
            f"{f} {-d:+.3f}" for f, d in r["mean_drop"].items()))
    typer.echo(f"-> {output / 'shift.md'}")


def shortcut_test(
    checkpoint: ModelsOpt,
    split: SplitOpt,
    fold: FoldOpt = None,
    output: Annotated[Path, _output(help="Folder for shortcut.json/.md/.png.")] = Path("runs/shortcut"),
    calibration: CalibrationOpt = None,
    gate: GateOpt = None,
    grow: Annotated[float, typer.Option(
        min=0.0, max=2.0, help="Grow the tumour's box by this share of its size on each side before erasing or "
                               "isolating it (larger: takes what surrounds the tumour, e.g. oedema, too).")] = 0.15,
) -> None:
    """What each model answers on held-out slices whose tumour is erased (box fill, a tissue patch
    from elsewhere, inpainting, mirrored hemisphere) or left alone on a blank or tissue background,
    per class: its own class, another tumour, no tumour (with a gate) or referred.

    --calibration/--gate apply to every model given (default: the files beside each model).

    Example: brain-tumor shortcut-test -m runs/cv/fold-1/model.pt --split runs/cv/splits.json --fold 1
    """
    import numpy as np

    from brain_tumor.context_shortcut import run_shortcut_test
    from brain_tumor.data.manifest import CLASS_NAMES
    from brain_tumor.data.splits import load_split

    models = _named_models(checkpoint)
    try:
        records, _, _ = _model_data(next(iter(models.values())))
        idx = [i for i in load_split(split, fold).test if records[i].box is not None]
    except (ValueError, OSError, KeyError) as exc:
        _fail(str(exc))
    if not idx:
        _fail("no test slice has a tumour box (the manifest's box_* columns)")
    paths = [records[i].path for i in idx]
    labels = np.array([CLASS_NAMES.index(records[i].label) for i in idx])
    groups = [records[i].patient_id or records[i].path for i in idx]
    results = run_shortcut_test(models, paths, labels, [records[i].box for i in idx], groups, list(CLASS_NAMES),
                                output, calibration, gate, [records[i].result_name for i in idx], grow)
    for name, r in results.items():
        typer.echo(f"{name}: " + ", ".join(f"{m} {100 * v['all']['same'][0]:.1f}%" for m, v in r["summary"].items()))
    typer.echo(f"-> {output / 'shortcut.md'}")
