"""Shipping a model: ``export`` and ``serve``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

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


def export(
    checkpoint: CheckpointOpt,
    output: Annotated[Path | None, _output(
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
    mapped = predictor.evidence_record is not None  # the tumour map's evidence travels too
    names = ["logits", "tumour_evidence"] if mapped else ["logits"]
    ours = predictor.forward_parts(x, ("evidence",) if mapped else ())
    theirs = OnnxPredictor(output).run(x.numpy(), names)
    probs = (ours["logits"].softmax(1), torch.from_numpy(theirs["logits"]).softmax(1))
    diff = float((probs[0] - probs[1]).abs().max())
    typer.echo(f"wrote {output}; max |p_torch - p_onnx| = {diff:.2e}")
    if diff > 1e-4:
        _fail(f"ONNX parity failed ({diff:.2e} > 1e-4)")
    if mapped:
        gap = float(np.abs(ours["evidence"].numpy() - theirs["tumour_evidence"]).max())
        typer.echo(f"the tumour map travels: max |evidence_torch - evidence_onnx| = {gap:.2e}")
        if gap > 1e-4:
            _fail(f"ONNX parity of the tumour map failed ({gap:.2e} > 1e-4)")
    if int8_calibration:
        from brain_tumor.data.imageio import ImageReadError, expand_inputs, read_frames

        images = []
        for path in expand_inputs(int8_calibration):
            try:
                images += [predictor.to_tensor(image) for _, image in read_frames(path)]
            except ImageReadError as exc:
                typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        if not images:
            _fail("no readable calibration images")
        calibration = torch.stack(images).numpy()
        int8 = quantize_int8(output, int8_path(output), calibration)
        rounded, exact = (OnnxPredictor(f).run(calibration, names) for f in (int8, output))  # one pass each
        agree = float((rounded["logits"].argmax(1) == exact["logits"].argmax(1)).mean())
        typer.echo(f"wrote {int8} (calibrated on {len(images)} images; agrees with fp32 on {agree:.1%} of them)")
        if mapped:
            threshold = float(predictor.evidence_record["threshold"])
            same = float(((rounded["tumour_evidence"] < threshold) == (exact["tumour_evidence"] < threshold)).mean())
            typer.echo(f"int8's tumour map answers \"no tumour\" as fp32's does on {same:.1%} of them")
    if package is not None:
        from brain_tumor.export import export_package

        try:
            typer.echo(f"wrote package {export_package(checkpoint, package, model_card)}")
        except (ValueError, OSError) as exc:
            _fail(f"cannot write package: {exc}")


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
    tta: TtaOpt = "none",
    scope_check: ScopeOpt = True,
) -> None:
    """Serve the model over HTTP with a web page at /.

    Example: brain-tumor serve -m my-model/ --port 8000 --api-key "$KEY"
    """
    import uvicorn

    from brain_tumor.serve.app import ServiceSettings, create_app

    _load_fast_predictor(checkpoint, precision, engine, onnx, threads, calibration, gate, tta)  # fail early, one line
    settings = ServiceSettings(checkpoint, max_upload_mb * 1024 * 1024, tuple(cors_origin or ()), model_card,
                               precision=precision, engine=engine, onnx=onnx, threads=threads, calibration=calibration,
                               gate=gate, tta=tta, scope_check=scope_check,
                               body_timeout_s=body_timeout, upload_deadline_s=upload_deadline,
                               max_concurrent_decodes=max_concurrent_decodes,
                               api_key=api_key, max_batch=max_batch, max_wait_ms=max_wait_ms,
                               request_timeout_s=request_timeout)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        logging.getLogger("brain_tumor").warning("serving on %s without --api-key: anyone who reaches it can use it",
                                                 host)
    # brain_tumor.access writes one JSON line per request in place of uvicorn's access log
    uvicorn.run(create_app(settings), host=host, port=port, access_log=False)
