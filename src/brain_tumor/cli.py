"""The ``brain-tumor`` command line: thin shells over the library."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Classify brain-tumour MRI slices with a fine-tuned ResNet-50, and prove how well it does.")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML/JSON config file.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override, e.g. train.lr=3e-4.")]
CheckpointOpt = Annotated[Path, typer.Option(
    "--checkpoint", "-m", help="A model: a model.pt written by train/reproduce, a package folder written by "
                               "export --package, or hf://owner/name of a package on the Hugging Face Hub.")]
OnnxOpt = Annotated[Path | None, typer.Option(help="Logits from this exported ONNX model (e.g. int8).")]
EngineOpt = Annotated[str, typer.Option(
    help="auto (the fastest path found: ONNX int8 or fp32 exported beside the model, else PyTorch) | pytorch | onnx.")]
PrecisionOpt = Annotated[str, typer.Option(
    help="PyTorch path: auto (bf16 where the CPU has it natively, else fp32) | fp32 | bf16.")]
ThreadsOpt = Annotated[int | None, typer.Option(help="Intra-op threads (default: one per usable core).")]
CalibrationOpt = Annotated[Path | None, typer.Option(
    help="calibration.json from `brain-tumor calibrate` (temperature, referral threshold, conformal prediction "
         "sets); default: one beside the model or in its package.")]
GateOpt = Annotated[Path | None, typer.Option(
    help="gate.json from `brain-tumor no-tumour-gate` (answers no_tumour); default: one beside the model.")]
SplitOpt = Annotated[Path, typer.Option(help="A paper split.json or a CV splits.json (then --fold).")]
FoldOpt = Annotated[int | None, typer.Option(help="CV fold (1-based) when --split holds folds.")]


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _config(config: Path | None, overrides: list[str] | None,  # type: ignore[no-untyped-def]
            check_assets: bool = True):
    """The run's settings; with ``check_assets`` (train, reproduce, cv) a missing dataset or missing
    Keras weights end here in one line naming the ``brain-tumor fetch`` command that brings them."""
    from brain_tumor.config import load_config

    try:
        cfg = load_config(config, overrides or [])
    except (ValueError, TypeError, OSError) as exc:
        _fail(str(exc))
    if check_assets:
        from brain_tumor.fetch import find_missing, missing_line

        missing = find_missing(cfg.data.root, cfg.model.weights, cfg.model.weights_path)
        if missing:
            _fail(missing_line(missing, _fetch_command(missing.fetch_flags(), config, overrides)))
    return cfg


def _fetch_command(flags: list[str], config: Path | None, overrides: list[str] | None) -> str:
    """``brain-tumor fetch`` with the flags and the settings that say where things go."""
    import shlex

    words = ["brain-tumor", "fetch", *flags] + (["--config", str(config)] if config else [])
    where = {"--data": ("data.root",), "--weights": ("model.weights_path",)}
    wanted = where.get(flags[0], ()) if flags else ("data.root", "model.weights_path")
    for item in overrides or []:
        if item.split("=", 1)[0] in wanted:
            words += ["--set", item]
    return shlex.join(words)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Set up logging."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, force=True,
                        format="%(levelname)s %(name)s: %(message)s")


@app.command()
def prepare(
    source: Annotated[Path, typer.Argument(help="Folder of figshare N.mat files (+ cvind.mat).")],
    output: Annotated[Path, typer.Argument(help="Where PNGs and manifest.csv are written.")],
    download: Annotated[bool, typer.Option(help="Download the figshare release into SOURCE first.")] = False,
) -> None:
    """Convert the official figshare MATLAB release into images + manifest.csv.

    Example: brain-tumor prepare figshare-mat/ data/figshare-cheng2015
    """
    from brain_tumor.data.download import download_figshare
    from brain_tumor.data.manifest import DatasetLayoutError, convert_figshare_mat

    try:
        if download:
            download_figshare(source)
        records = convert_figshare_mat(source, output)
    except (DatasetLayoutError, OSError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"wrote {len(records)} slices and {output / 'manifest.csv'}")


@app.command()
def fetch(
    data: Annotated[bool, typer.Option("--data", help="Fetch the dataset (figshare release, converted).")] = False,
    weights: Annotated[bool, typer.Option("--weights", help="Fetch the Keras ImageNet ResNet-50 .h5.")] = False,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    figshare_api: Annotated[str | None, typer.Option(help="figshare file-list URL (a mirror).")] = None,
    weights_url: Annotated[str | None, typer.Option(help="URL of the .h5 (a mirror; needs --weights-md5).")] = None,
    weights_md5: Annotated[str | None, typer.Option(help="MD5 the .h5 from --weights-url must have.")] = None,
    attempts: Annotated[int, typer.Option(min=1, max=20, help="Tries per file before giving up.")] = 3,
) -> None:
    """Fetch, verify and cache what runs need (both without --data/--weights), where the settings
    look for them (data.root, model.weights_path; default ~/.cache/brain-tumor). Resumes.

    Example: brain-tumor fetch --data --weights
    """
    from brain_tumor.fetch import FIGSHARE_API, KERAS_RESNET50_MD5, KERAS_RESNET50_URL

    if weights_url and not weights_md5:
        _fail("--weights-url needs --weights-md5 (a download is never used unverified)")
    cfg = _config(config, overrides, check_assets=False)
    both = not data and not weights
    _fetch(cfg, data or both, weights or both, figshare_api or FIGSHARE_API,
           weights_url or KERAS_RESNET50_URL, weights_md5 or KERAS_RESNET50_MD5, attempts)


def _fetch(cfg, data: bool, weights: bool, figshare_api: str, weights_url: str,  # type: ignore[no-untyped-def]
           weights_md5: str, attempts: int) -> None:
    """Fetch the dataset and/or the weights a config points at; one-line errors."""
    from brain_tumor.data.manifest import DatasetLayoutError
    from brain_tumor.fetch import FetchError, fetch_dataset, fetch_keras_weights

    try:
        if data:
            typer.echo(f"dataset: {fetch_dataset(cfg.data.root, figshare_api, attempts)}")
        if weights:
            if cfg.model.weights_path is None:
                raise FetchError("model.weights_path is none; set it to where the weights should go")
            typer.echo(f"weights: {fetch_keras_weights(cfg.model.weights_path, weights_url, weights_md5, attempts)}")
    except FetchError as exc:
        _fail(f"{exc} (no internet? fetch on a connected machine, or point data.root/model.weights_path "
              "or $BRAIN_TUMOR_DATA/$BRAIN_TUMOR_WEIGHTS at a copy)")
    except (DatasetLayoutError, OSError, ValueError) as exc:
        _fail(str(exc))


@app.command()
def reproduce(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    download: Annotated[bool, typer.Option(
        help="First fetch the dataset and weights that are missing (as `brain-tumor fetch`).")] = False,
    results_dir: Annotated[Path, typer.Option(
        help="Metrics, figures and report (the committed copy: --results-dir results/paper-split).")]
    = Path("runs/paper-split/report"),
    work_dir: Annotated[Path, typer.Option(help="Checkpoints and TensorBoard logs.")] = Path("runs/paper-split"),
    scenario: Annotated[list[int] | None, typer.Option(help="Keras layers to freeze; repeatable.")] = None,
    trust: Annotated[bool, typer.Option(help="Also calibrate, choose the refer threshold and score Grad-CAM.")] = True,
) -> None:
    """Reproduce the paper: both freeze scenarios on the paper split, with the comparison report.

    Example: brain-tumor reproduce   (or: brain-tumor reproduce --download on a machine without ../shared)
    """
    from brain_tumor.reproduce import SCENARIOS
    from brain_tumor.reproduce import reproduce as run

    cfg = _config(config, overrides, check_assets=not download)
    if download:
        from brain_tumor.fetch import FIGSHARE_API, KERAS_RESNET50_MD5, KERAS_RESNET50_URL

        _fetch(cfg, True, cfg.model.weights == "keras", FIGSHARE_API, KERAS_RESNET50_URL, KERAS_RESNET50_MD5, 3)
    try:
        runs = run(cfg, results_dir, work_dir, tuple(scenario or SCENARIOS), trust)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    for n, m in runs.items():
        typer.echo(f"freeze {n}: test accuracy {m['accuracy']:.4f}, meningioma recall {m['recall']['meningioma']:.3f}")
    typer.echo(f"report: {results_dir / 'report.html'}")


@app.command()
def train(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    results_dir: Annotated[Path, typer.Option(help="Run folder for metrics and figures.")] = Path("runs/train/report"),
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


@app.command()
def evaluate(
    checkpoint: CheckpointOpt,
    split: Annotated[Path, typer.Option(help="split.json of the run.")] = Path("results/paper-split/split.json"),
    data_root: Annotated[Path | None, typer.Option(help="Dataset folder (default from the checkpoint).")] = None,
    output: Annotated[Path, typer.Option(help="Where metrics.json goes.")] = Path("runs/evaluate"),
    data: Annotated[Path | None, typer.Option(
        help="Evaluate on this labelled collection instead: a CSV of path,label, a folder with manifest.csv, "
             "or class-per-folder (glioma_tumor/, no_tumor/, normal/, ...).")] = None,
    calibration: CalibrationOpt = None,
    gate: GateOpt = None,
) -> None:
    """Evaluate a checkpoint on the test part of a saved split, or on any labelled collection
    (with --data: as `predict` answers, calibration.json and gate.json included).

    Example: brain-tumor evaluate -m runs/train/model.pt --data ../shared/data/br35h-no-tumour --output runs/evaluate
    """
    if data is not None:
        _evaluate_collection(checkpoint, data, output, calibration, gate)
        return
    if calibration is not None or gate is not None:
        _fail("--calibration and --gate apply with --data (a split's test part is scored as the model alone)")

    from brain_tumor.data.splits import load_split
    from brain_tumor.evaluation.run_eval import evaluate_checkpoint, write_json
    _, images, labels = _model_data(checkpoint, data_root)
    try:
        test = load_split(split).test
    except (ValueError, OSError, KeyError) as exc:
        _fail(f"{split}: cannot read the split ({exc})")
    metrics, _, _ = evaluate_checkpoint(checkpoint, images, labels, test)
    write_json(metrics, output / "metrics.json")
    typer.echo(f"accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f} -> {output / 'metrics.json'}")


def _evaluate_collection(checkpoint: Path, data: Path, output: Path, calibration: Path | None,
                         gate: Path | None) -> None:
    import csv

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
    predictor = _load_fast_predictor(checkpoint, "auto", "auto", None, None, calibration, gate)
    answers = predict_items(predictor, items)
    summary = summarise_collection(items, answers, predictor.class_names)
    output.mkdir(parents=True, exist_ok=True)
    write_json({**summary, "checkpoint": str(checkpoint), "data": str(data), "compute": predictor.compute},
               output / "metrics.json")
    rows = outcome_rows(items, answers)
    with (output / "outcomes.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (output / "summary.md").write_text(collection_markdown(summary))
    draw_collection_figures(items, answers, summary, output)
    typer.echo(collection_markdown(summary).strip())
    typer.echo(f"-> {output / 'summary.md'}")


def _load_fast_predictor(checkpoint: Path, precision: str, engine: str, onnx: Path | None,  # type: ignore[no-untyped-def]
                         threads: int | None, calibration: Path | None = None, gate: Path | None = None):
    """The predictor on the path :func:`brain_tumor.inference.load_predictor` picks; one-line errors."""
    from brain_tumor.model_loading import load_predictor

    _load_predictor(checkpoint)  # a missing or broken checkpoint: one line
    try:
        predictor = load_predictor(checkpoint, precision, engine, onnx, threads, calibration, gate)
    except ValueError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own types)
        _fail(f"{onnx or checkpoint}: cannot load the model's ONNX engine ({str(exc).splitlines()[0]})")
    choice = predictor.compute["engine"]
    logging.getLogger("brain_tumor").info("engine %s %s (%s)", choice["engine"], choice["precision"], choice["reason"])
    if predictor.calibration_source:
        logging.getLogger("brain_tumor").info("calibration %s: %.0f%% prediction sets", predictor.calibration_source,
                                              100 * predictor.set_confidence)
    return predictor


def _checkpoint_meta(checkpoint: Path) -> dict:  # type: ignore[type-arg]
    """A checkpoint's self-description, or one line and exit 2."""
    from brain_tumor.training.checkpoint import CheckpointError, read_checkpoint_meta

    try:
        return read_checkpoint_meta(checkpoint)
    except CheckpointError as exc:
        _fail(str(exc))
    raise AssertionError  # unreachable: _fail exits


def _load_predictor(checkpoint: Path):  # type: ignore[no-untyped-def]
    from brain_tumor.inference import Predictor
    from brain_tumor.training.checkpoint import CheckpointError

    try:
        return Predictor.from_checkpoint(checkpoint)
    except CheckpointError as exc:
        _fail(str(exc))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        _fail(f"{checkpoint}: cannot load checkpoint ({str(exc).splitlines()[0] if str(exc) else exc})")


@app.command()
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Files (JPG/PNG/DICOM/.mat) and folders.")],
    checkpoint: CheckpointOpt,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write predictions as CSV.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write predictions as JSON.")] = None,
    cam_dir: Annotated[Path | None, typer.Option(help="Also write Grad-CAM overlays here.")] = None,
    onnx: OnnxOpt = None,
    engine: EngineOpt = "auto",
    precision: PrecisionOpt = "auto",
    threads: ThreadsOpt = None,
    group_by: Annotated[str, typer.Option(
        help="Also one answer per patient/study: none | folder (slices of one patient in one folder) | "
             "study (DICOM StudyInstanceUID; other files by folder).")] = "none",
    group_csv: Annotated[Path | None, typer.Option(help="Write the per-group answers as CSV.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Slices per forward pass.")] = 16,
    calibration: CalibrationOpt = None,
    gate: GateOpt = None,
) -> None:
    """Predict slices; bad files get one error line each, the rest go on. Exit 1 if any failed.

    Rows are written to --csv/--json as they come (flushed), so Ctrl-C or a failing file never
    loses finished rows; unsupported files found in folders are reported, never silently skipped.

    Example: brain-tumor predict scans/ -m model.pt --csv predictions.csv --group-by folder
    """
    from brain_tumor.prediction_output import OverlayNames, PredictionSinks, prediction_fields
    from brain_tumor.study import GROUP_BY, aggregate, group_key

    if group_by not in GROUP_BY:
        _fail(f"--group-by: unknown {group_by!r} ({' | '.join(GROUP_BY)})")
    predictor = _load_fast_predictor(checkpoint, precision, engine, onnx, threads, calibration, gate)
    try:
        sinks = PredictionSinks(csv_out, json_out, prediction_fields(predictor.class_names, predictor.ood is not None,
                                                                     predictor.conformal is not None,
                                                                     predictor.gate is not None))
    except OSError as exc:
        _fail(f"cannot write predictions: {exc.strerror or exc} ({exc.filename})")
    overlays = OverlayNames(cam_dir) if cam_dir is not None else None
    skipped: list[Path]
    n_failed, answered, skipped = 0, [], []
    try:
        for p in predictor.predict_files(paths, batch_size=batch_size, skipped=skipped):
            if p.error:
                n_failed += 1
                typer.secho(f"error: {p.error}", fg=typer.colors.RED, err=True)
            else:
                answered.append(p)
                flag = "  REFER" if p.refer else ""
                if predictor.conformal is not None and "prediction_set" in p.extra:
                    members = p.extra["prediction_set"] or "none of the classes"
                    flag += f"  set@{predictor.set_confidence:.0%}: {members}"
                typer.echo(f"{p.source}\t{p.predicted}\t{p.confidence:.3f}{flag}")
                if overlays is not None:
                    _write_overlay_or_warn(predictor, p.source, overlays)
            sinks.write(p.row())
    except KeyboardInterrupt:  # the finally below closes the outputs, the JSON array included
        typer.secho(f"interrupted: {sinks.count} rows kept", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130) from None
    finally:
        sinks.close()
    for path in skipped:
        kinds = "JPG/PNG/TIFF/BMP/DICOM/.mat"
        why = f"a folder without {kinds} files" if path.is_dir() else f"not {kinds}"
        typer.secho(f"skipped: {path} ({why})", fg=typer.colors.YELLOW, err=True)
    if group_by != "none" and answered:
        _report_groups(aggregate(answered, [group_key(p.source, group_by) for p in answered]), group_by, group_csv)
    typer.echo(f"{len(answered)} predicted, {n_failed} failed, {len(skipped)} skipped")
    raise typer.Exit(1 if n_failed else 0)


def _report_groups(groups, group_by: str, group_csv: Path | None) -> None:  # type: ignore[no-untyped-def]
    import csv

    for g in groups:
        flag = f"  REFER ({'; '.join(g.refer_reasons)})" if g.refer else ""
        typer.echo(f"[{group_by}] {g.group}\t{g.predicted}\t{g.confidence:.3f}\t{g.n_slices} slices, "
                   f"{g.agreement:.0%} agree{flag}")
    if group_csv and groups:
        rows = [g.row() for g in groups]
        try:
            with group_csv.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        except OSError as exc:
            typer.secho(f"error: cannot write {group_csv}: {exc.strerror or exc}", fg=typer.colors.RED, err=True)


def _write_overlay_or_warn(predictor, source: str, names) -> None:  # type: ignore[no-untyped-def]
    """One overlay; a failure is one line and the predictions go on."""
    from brain_tumor.data.imageio import ImageReadError

    try:
        _write_overlay(predictor, source, names.for_source(source))
    except (ImageReadError, OSError, RuntimeError, ValueError) as exc:
        typer.secho(f"error: no overlay for {source}: {str(exc).splitlines()[0]}", fg=typer.colors.RED, err=True)


def _write_overlay(predictor, source: str, target: Path) -> Path:  # type: ignore[no-untyped-def]
    """Grad-CAM overlay of one source (``path`` or ``path#frameN``) written to ``target``."""
    from PIL import Image

    from brain_tumor.data.imageio import read_slice
    from brain_tumor.explain.gradcam import grad_cam, overlay

    path, _, frame = source.partition("#frame")
    image = predictor.to_tensor(read_slice(Path(path), frame=int(frame) if frame else None))
    cam = grad_cam(predictor.network, predictor.normalize, image[None])[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.png")
    Image.fromarray(overlay(image[0].numpy(), cam)).save(tmp)
    tmp.replace(target)
    return target


@app.command()
def explain(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to explain.")],
    checkpoint: CheckpointOpt,
    output: Annotated[Path, typer.Option(help="Folder for the overlays.")] = Path("gradcam"),
) -> None:
    """Write Grad-CAM overlays (last ResNet stage, predicted class) for each slice.

    Example: brain-tumor explain slice.jpg -m model.pt --output gradcam/
    """
    from brain_tumor.data.imageio import ImageReadError
    from brain_tumor.inference import expand_inputs
    from brain_tumor.prediction_output import OverlayNames

    predictor = _load_predictor(checkpoint)
    skipped: list[Path]
    names, n_failed, skipped = OverlayNames(output), 0, []
    for path in expand_inputs(paths, skipped):
        try:
            sources = [source for source, _ in predictor.read(path)]  # one per DICOM frame
            for source in sources:
                typer.echo(f"{source} -> {_write_overlay(predictor, source, names.for_source(source))}")
        except (ImageReadError, OSError, ValueError, RuntimeError) as exc:
            n_failed += 1
            typer.secho(f"error: {path}: {str(exc).splitlines()[0]}", fg=typer.colors.RED, err=True)
    for path in skipped:
        typer.secho(f"skipped: {path} (not JPG/PNG/TIFF/BMP/DICOM/.mat)", fg=typer.colors.YELLOW, err=True)
    raise typer.Exit(1 if n_failed else 0)


@app.command()
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
    tumour boxes on test, store calibration in the checkpoint and write the model card.

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
    result = run_trust(checkpoint, run_dir, images, labels, boxes, s.val, s.test,
                       target_risk, tolerance_px)
    c, loc = result["calibration"], result["localisation"]
    typer.echo(f"T={c['temperature']:.3f} ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}; "
               f"referred {c['test_referred_rate']:.1%}; pointing game {loc['pointing_game']:.1%}")


@app.command()
def export(
    checkpoint: CheckpointOpt,
    output: Annotated[Path | None, typer.Option(
        help="ONNX file to write (default: model.onnx beside the checkpoint, where predict/serve find it).")] = None,
    int8_calibration: Annotated[list[Path] | None, typer.Option(
        help="Also write an int8 model (<output>.int8.onnx) calibrated on these training images/folders.")] = None,
    package: Annotated[Path | None, typer.Option(
        help="Also write a model package folder: safetensors weights, config.json, OOD bank, model card, "
             "the ONNX files, SHA256SUMS (load it anywhere a model is taken).")] = None,
    model_card: Annotated[Path | None, typer.Option(help="The package's model card (default: generated).")] = None,
) -> None:
    """Export to ONNX (normalisation inside) and check parity with PyTorch; optionally int8 and a
    model package.

    Example: brain-tumor export -m model.pt --int8-calibration train-slices/ --package my-model/
    """
    import numpy as np
    import torch

    from brain_tumor.export import default_onnx_path, export_onnx, int8_path, quantize_int8
    from brain_tumor.onnx_runtime import OnnxPredictor

    if not checkpoint.is_file():
        _fail(f"{checkpoint}: export takes a checkpoint file (model.pt)")
    predictor = _load_predictor(checkpoint)
    output = output or default_onnx_path(checkpoint)
    export_onnx(checkpoint, output)
    size = predictor.preprocessing.image_size
    x = torch.randint(0, 256, (4, 1, size, size), dtype=torch.uint8)
    ours = predictor.logits(x).softmax(1).numpy()
    theirs = torch.from_numpy(OnnxPredictor(output).logits(x.numpy())).softmax(1).numpy()
    diff = float(np.abs(ours - theirs).max())
    typer.echo(f"wrote {output}; max |p_torch - p_onnx| = {diff:.2e}")
    if diff > 1e-4:
        _fail(f"ONNX parity failed ({diff:.2e} > 1e-4)")
    if int8_calibration:
        from brain_tumor.data.imageio import ImageReadError
        from brain_tumor.inference import expand_inputs

        images = []
        for path in expand_inputs(int8_calibration):
            try:
                images += [predictor.to_tensor(image) for _, image in predictor.read(path)]
            except ImageReadError as exc:
                typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        if not images:
            _fail("no readable calibration images")
        calibration = torch.stack(images).numpy()
        int8 = quantize_int8(output, int8_path(output), calibration)
        agree = float((OnnxPredictor(int8).logits(calibration).argmax(1)
                       == OnnxPredictor(output).logits(calibration).argmax(1)).mean())
        typer.echo(f"wrote {int8} (calibrated on {len(images)} images; agrees with fp32 on {agree:.1%} of them)")
    if package is not None:
        from brain_tumor.export import export_package

        try:
            typer.echo(f"wrote package {export_package(checkpoint, package, model_card)}")
        except (ValueError, OSError) as exc:
            _fail(f"cannot write package: {exc}")


@app.command()
def serve(
    checkpoint: CheckpointOpt,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    max_upload_mb: Annotated[int, typer.Option(help="Largest accepted upload.")] = 20,
    cors_origin: Annotated[list[str] | None, typer.Option(help="Allow this browser origin; repeatable.")] = None,
    model_card: Annotated[Path | None, typer.Option(help="model_card.md shown by GET /model.")] = None,
    onnx: OnnxOpt = None,
    engine: EngineOpt = "auto",
    precision: PrecisionOpt = "auto",
    threads: ThreadsOpt = None,
    api_key: Annotated[str | None, typer.Option(
        envvar="BRAIN_TUMOR_API_KEY", help="Require this X-API-Key on every /v1 call (set it when exposed).")] = None,
    body_timeout: Annotated[float, typer.Option(min=0.1, help="Seconds an upload may stall before 408.")] = 30.0,
    upload_deadline: Annotated[float, typer.Option(min=1, help="Seconds a whole upload may take before 408.")] = 300.0,
    max_concurrent_decodes: Annotated[int, typer.Option(min=1, help="Images decoded at once (bounds memory).")] = 2,
    max_batch: Annotated[int, typer.Option(min=1, help="Micro-batching: images per forward pass at most.")] = 16,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="Micro-batching: wait this long for more.")] = 5.0,
    request_timeout: Annotated[float, typer.Option(help="Seconds before a prediction gets 503.")] = 120.0,
    calibration: CalibrationOpt = None,
    gate: GateOpt = None,
) -> None:
    """Serve the model over HTTP with a web page at /.

    Example: brain-tumor serve -m my-model/ --port 8000 --api-key "$KEY"
    """
    import uvicorn

    from brain_tumor.serve.app import ServiceSettings, create_app

    _load_fast_predictor(checkpoint, precision, engine, onnx, threads, calibration, gate)  # fail early, in one line
    settings = ServiceSettings(checkpoint, max_upload_mb * 1024 * 1024, tuple(cors_origin or ()), model_card,
                               precision=precision, engine=engine, onnx=onnx, threads=threads, calibration=calibration,
                               gate=gate,
                               body_timeout_s=body_timeout, upload_deadline_s=upload_deadline,
                               max_concurrent_decodes=max_concurrent_decodes,
                               api_key=api_key, max_batch=max_batch, max_wait_ms=max_wait_ms,
                               request_timeout_s=request_timeout)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        logging.getLogger("brain_tumor").warning("serving on %s without --api-key: anyone who reaches it can use it",
                                                 host)
    # brain_tumor.access writes one JSON line per request in place of uvicorn's access log
    uvicorn.run(create_app(settings), host=host, port=port, access_log=False)


@app.command()
def cv(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    grouping: Annotated[str, typer.Option(help="official | strict | slice (leaky, for comparison).")] = "official",
    results_dir: Annotated[Path | None, typer.Option(
        help="Default runs/cv/<grouping>/report (the committed copies: --results-dir results/cv/NAME).")] = None,
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


@app.command()
def calibrate(
    cv_dir: Annotated[Path, typer.Argument(help="A `brain-tumor cv` results folder (fold-*/test_predictions.csv).")],
    output: Annotated[Path, typer.Option(help="Where calibration.json and the cross-fitted report go.")] = Path(
        "runs/calibrate"),
    confidence: Annotated[float, typer.Option(
        min=0.5, max=0.999, help="Stated coverage of the prediction sets.")] = 0.95,
    target_risk: Annotated[float, typer.Option(
        min=0.001, max=0.5, help="Error rate allowed among answered slices.")] = 0.02,
    class_conditional: Annotated[bool, typer.Option(
        help="Coverage per true class (Mondrian), not only on average over classes.")] = True,
) -> None:
    """Fit temperature, referral threshold and conformal prediction sets on a patient-wise CV's
    out-of-fold predictions; judge them by cross-fitting over the folds; write calibration.json.

    Example: brain-tumor calibrate results/cv/official-freeze-15-bf16-e12 --output runs/calibrate
    then: brain-tumor predict scan.jpg -m model.pt --calibration runs/calibrate/calibration.json"""
    from brain_tumor.calibrate import CalibrationInputError, run_calibrate

    try:
        summary = run_calibrate(cv_dir, output, confidence, target_risk, class_conditional)
    except (CalibrationInputError, OSError, ValueError, KeyError) as exc:
        _fail(str(exc))
    c, e = summary["conformal"], summary
    typer.echo(f"ECE {e['ece_before']['value']:.4f} -> {e['ece_after']['value']:.4f}; "
               f"sets at {confidence:.0%}: coverage {100 * c['coverage']['value']:.2f}%, "
               f"mean size {c['mean_set_size']:.3f}; answered {100 * e['referral']['answered']['value']:.1f}% "
               f"-> {output / 'calibration_cv.md'}, {output / 'calibration.json'}")


@app.command("no-tumour-gate")
def no_tumour_gate(
    checkpoint: CheckpointOpt,
    splits: Annotated[Path, typer.Option(help="The CV's splits.json the model was trained on.")],
    fold: Annotated[int, typer.Option(min=1, help="The model's CV fold (1-based).")],
    data: Annotated[Path | None, typer.Option(help="The tumour dataset (default: the configured Figshare).")] = None,
    no_tumour_data: Annotated[Path, typer.Option(help="Slices without a tumour: a folder with manifest.csv "
                                                      "(label no_tumour, group), or a class-per-folder tree.")] = Path(
        "../shared/data/br35h-no-tumour"),
    output: Annotated[Path, typer.Option(help="Where gate.json and no_tumour.json/.md go.")] = Path("runs/no-tumour"),
    per_class: Annotated[int, typer.Option(min=10, help="Training slices per tumour class for the gate.")] = 200,
    threshold: Annotated[float, typer.Option(min=0.01, max=0.99, help="P(no tumour) that answers no tumour.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of the sampling, styles and group folds.")] = 0,
) -> None:
    """Fit the model's "no tumour" gate and measure it, with the collection shortcut controlled.

    Example: brain-tumor no-tumour-gate -m runs/cv/NAME/fold-1/model.pt --splits results/cv/NAME/splits.json
    --fold 1 --output runs/no-tumour; then copy gate.json beside model.pt (predict and serve find it there)."""
    from brain_tumor.config import RunConfig
    from brain_tumor.no_tumour_gate import run_no_tumour_gate

    _checkpoint_meta(checkpoint)
    for path in (splits, no_tumour_data):
        if not path.exists():
            _fail(f"{path}: no such file or folder")
    try:
        summary = run_no_tumour_gate(checkpoint, data or Path(RunConfig().data.root), splits, fold, no_tumour_data,
                                     output, output / "cache", per_class, threshold=threshold, seed=seed)
    except (ValueError, OSError, IndexError) as exc:
        _fail(str(exc))
    typer.echo(Path(output / "no_tumour.md").read_text().strip())
    typer.echo(f"-> {output / 'gate.json'} ({len(summary['results'])} variants measured)")


@app.command()
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
    from brain_tumor.cv import compare as mcnemar_compare
    from brain_tumor.cv import compare_repeats, patients_by_path

    try:
        patient_of = patients_by_path(run_a) if (run_a / "config.yaml").is_file() else None
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


@app.command()
def report(
    results_dir: Annotated[Path, typer.Option(help="The reproduction's results folder.")] = Path("results/paper-split"),
) -> None:
    """Rebuild comparison.md and report.html from finished runs (after `trust`, say).

    Example: brain-tumor report --results-dir runs/paper-split/report
    """
    from brain_tumor.reproduce import rebuild_report

    rebuild_report(results_dir)
    typer.echo(f"report: {results_dir / 'report.html'}")


def _model_data(checkpoint: Path, data_root: Path | None = None):  # type: ignore[no-untyped-def]
    """Records, images (at the checkpoint's size and pipeline) and labels for a checkpoint's data
    (or ``data_root``); a missing dataset is one line naming the command that fetches it."""
    from brain_tumor.training.fit import load_data

    meta = _checkpoint_meta(checkpoint)
    pre, data_cfg = meta["preprocessing"], meta["config"]["data"]
    root = str(data_root or data_cfg["root"])
    try:
        return load_data(root, pre["image_size"], data_cfg.get("cache_dir"), pre.get("pipeline", "paper"))
    except (ValueError, OSError) as exc:
        _fail(f"{str(exc).splitlines()[0]}; the dataset this model was trained on is not at {root}: "
              f"fetch it with: brain-tumor fetch --data --set data.root={root}, or pass --data-root")


ModelsOpt = Annotated[list[str], typer.Option(
    "--checkpoint", "-m", help="A model, or NAME=MODEL to name it in the tables; repeat to compare models.")]


def _named_models(items: list[str]) -> dict[str, Path]:
    """``NAME=CHECKPOINT`` options as a dict; one line and exit 2 for a malformed or missing one."""
    models = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).parent.name or Path(item).stem, item
        if not Path(path).exists():
            _fail(f"--checkpoint {item!r}: no such model (expected MODEL or NAME=MODEL)")
        models[name] = Path(path)
    return models


@app.command("shift-test")
def shift_test(
    checkpoint: ModelsOpt,
    split: SplitOpt,
    fold: FoldOpt = None,
    output: Annotated[Path, typer.Option(help="Folder for shift.json/.md/.png.")] = Path("runs/shift"),
    seed: Annotated[int, typer.Option(help="Seed of the random parts of the shifts.")] = 0,
) -> None:
    """Accuracy on the held-out test slices under controlled shifts (contrast, gamma, resolution,
    framing, rotation, noise, JPEG, bit depth), for each model.

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
    results = run_shift_test(models, paths, labels, groups, output, seed)
    draw_preprocessing_steps([paths[i] for i in np.linspace(0, len(paths) - 1, 4).astype(int)],
                             output / "preprocessing_steps.png")
    for name, r in results.items():
        typer.echo(f"{name}: clean {r['clean']:.4f}; " + ", ".join(
            f"{f} {-d:+.3f}" for f, d in r["mean_drop"].items()))
    typer.echo(f"-> {output / 'shift.md'}")


@app.command("shortcut-test")
def shortcut_test(
    checkpoint: ModelsOpt,
    split: SplitOpt,
    fold: FoldOpt = None,
    output: Annotated[Path, typer.Option(help="Folder for shortcut.json/.md/.png.")] = Path("runs/shortcut"),
    calibration: CalibrationOpt = None,
    gate: GateOpt = None,
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
                                output, calibration, gate)
    for name, r in results.items():
        typer.echo(f"{name}: " + ", ".join(f"{m} {100 * v['all']['same'][0]:.1f}%" for m, v in r["summary"].items()))
    typer.echo(f"-> {output / 'shortcut.md'}")


@app.command()
def ood(
    checkpoint: CheckpointOpt,
    split: SplitOpt,
    fold: FoldOpt = None,
    output: Annotated[Path, typer.Option(help="Folder for ood.json/.md.")] = Path("runs/ood"),
    flag_rate: Annotated[float, typer.Option(help="Share of in-distribution validation slices flagged.")] = 0.05,
    k: Annotated[int, typer.Option(help="Neighbour whose distance is the score.")] = 10,
) -> None:
    """Fit the out-of-distribution flag (kNN distance in feature space) on the training slices, set its
    threshold on validation, store it in the checkpoint, and report flag rates.

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
