"""Answering for slices: ``predict`` and ``explain``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from brain_tumor.atomic import atomic_path, write_dict_csv
from brain_tumor.cli.common import (
    CalibrationOpt,
    CheckpointOpt,
    EngineOpt,
    GateOpt,
    OnnxOpt,
    PrecisionOpt,
    ScopeOpt,
    ThreadsOpt,
    TtaOpt,
    _fail,
    _load_fast_predictor,
    _load_predictor,
    _output,
)


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
    tta: TtaOpt = "none",
    scope_check: ScopeOpt = True,
) -> None:
    """Predict slices; bad files get one error line each, the rest go on. Exit 1 if any failed.
    Images that are plainly not MRI slices of a head are refused with a reason (not a failure).

    Rows are written to --csv/--json as they come (flushed), so Ctrl-C or a failing file never
    loses finished rows; unsupported files found in folders are reported, never silently skipped.

    Example: brain-tumor predict scans/ -m model.pt --csv predictions.csv --group-by folder
    """
    from brain_tumor.prediction_output import OverlayNames, PredictionSinks, prediction_fields
    from brain_tumor.study import GROUP_BY, aggregate, group_key

    if group_by not in GROUP_BY:
        _fail(f"--group-by: unknown {group_by!r} ({' | '.join(GROUP_BY)})")
    predictor = _load_fast_predictor(checkpoint, precision, engine, onnx, threads, calibration, gate, tta)
    predictor.scope_check = scope_check
    try:
        sinks = PredictionSinks(csv_out, json_out, prediction_fields(predictor.class_names, predictor.ood is not None,
                                                                     predictor.conformal is not None,
                                                                     predictor.gate is not None,
                                                                     predictor.evidence_record is not None))
    except OSError as exc:
        _fail(f"cannot write predictions: {exc.strerror or exc} ({exc.filename})")
    overlays = OverlayNames(cam_dir) if cam_dir is not None else None
    skipped: list[Path]
    n_failed, n_refused, answered, skipped = 0, 0, [], []
    try:
        for p in predictor.predict_files(paths, batch_size=batch_size, skipped=skipped):
            if "out_of_scope" in p.extra:
                n_refused += 1
                typer.secho(f"refused: {p.source}: {p.error}", fg=typer.colors.YELLOW, err=True)
            elif p.error:
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
    typer.echo(f"{len(answered)} predicted, {n_refused} refused as out of scope, {n_failed} failed, "
               f"{len(skipped)} skipped")
    raise typer.Exit(1 if n_failed else 0)


def _report_groups(groups, group_by: str, group_csv: Path | None) -> None:  # type: ignore[no-untyped-def]

    for g in groups:
        flag = f"  REFER ({'; '.join(g.refer_reasons)})" if g.refer else ""
        typer.echo(f"[{group_by}] {g.group}\t{g.predicted}\t{g.confidence:.3f}\t{g.n_slices} slices, "
                   f"{g.agreement:.0%} agree{flag}")
    if group_csv and groups:
        rows = [g.row() for g in groups]
        try:
            write_dict_csv(group_csv, rows)
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
    with atomic_path(target, suffix=".png") as tmp:
        Image.fromarray(overlay(image[0].numpy(), cam)).save(tmp)
    return target


def explain(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to explain.")],
    checkpoint: CheckpointOpt,
    output: Annotated[Path, _output(help="Folder for the overlays.")] = Path("gradcam"),
) -> None:
    """Write Grad-CAM overlays (last ResNet stage, predicted class) for each slice.

    Example: brain-tumor explain slice.jpg -m model.pt --output gradcam/
    """
    from brain_tumor.data.imageio import ImageReadError, expand_inputs, read_frames
    from brain_tumor.prediction_output import OverlayNames

    predictor = _load_predictor(checkpoint)
    skipped: list[Path]
    names, n_failed, skipped = OverlayNames(output), 0, []
    for path in expand_inputs(paths, skipped):
        try:
            sources = [source for source, _ in read_frames(path)]  # one per DICOM frame
            for source in sources:
                typer.echo(f"{source} -> {_write_overlay(predictor, source, names.for_source(source))}")
        except (ImageReadError, OSError, ValueError, RuntimeError) as exc:
            n_failed += 1
            typer.secho(f"error: {path}: {str(exc).splitlines()[0]}", fg=typer.colors.RED, err=True)
    for path in skipped:
        typer.secho(f"skipped: {path} (not JPG/PNG/TIFF/BMP/DICOM/.mat)", fg=typer.colors.YELLOW, err=True)
    raise typer.Exit(1 if n_failed else 0)
