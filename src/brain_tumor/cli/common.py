"""What the commands share: option types and helpers that end a command in one line (exit 2)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML/JSON config file.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override, e.g. train.lr=3e-4.")]
CheckpointOpt = Annotated[Path, typer.Option(
    "--checkpoint", "-m", help="A model: a model.pt written by train/reproduce, a package folder written by "
                               "export --package, or hf://owner/name of a package on the Hugging Face Hub.")]
OnnxOpt = Annotated[Path | None, typer.Option(help="Logits from this exported ONNX model (e.g. int8).")]
EngineOpt = Annotated[str, typer.Option(
    help="auto (the fastest measured path found: on a CPU with AMX OpenVINO over the fp32 ONNX export, else "
         "ONNX Runtime int8 or fp32 exported beside the model, else PyTorch) | pytorch | onnx | openvino.")]
PrecisionOpt = Annotated[str, typer.Option(
    help="PyTorch path: auto (bf16 where the CPU makes it fast: AMX, or AVX512_BF16 timed faster; else fp32) "
         "| fp32 | bf16.")]
ThreadsOpt = Annotated[int | None, typer.Option(help="Intra-op threads (default: one per usable core).")]
CalibrationOpt = Annotated[Path | None, typer.Option(
    help="calibration.json from `brain-tumor calibrate` (temperature, referral threshold, conformal prediction "
         "sets); default: one beside the model or in its package.")]
GateOpt = Annotated[Path | None, typer.Option(
    help="gate.json from `brain-tumor no-tumour-gate` (answers no_tumour); default: one beside the model.")]
TtaOpt = Annotated[str, typer.Option(
    help="Test-time augmentation: none | flip (mean of the logits of each slice and its mirror; two forward "
         "passes a slice).")]
ScopeOpt = Annotated[bool, typer.Option(
    help="Refuse, with a reason, images that are plainly not MRI slices of a head (colour, blank, noise, bright "
         "edges, no head) before the model; --no-scope-check classifies them anyway.")]
SplitOpt = Annotated[Path, typer.Option(help="A paper split.json or a CV splits.json (then --fold).")]
BnPriorOpt = Annotated[float, typer.Option(
    min=0.0, max=0.99, help="With --adapt-bn: share of the training BatchNorm statistics kept (0: all re-estimated).")]
FoldOpt = Annotated[int | None, typer.Option(help="CV fold (1-based) when --split holds folds.")]
ModelsOpt = Annotated[list[str], typer.Option(
    "--checkpoint", "-m", help="A model, or NAME=MODEL to name it in the tables; repeat to compare models.")]


def _output(help: str, *old_names: str) -> Any:
    """The option that names a command's output, ``--output``/``-o`` in every command (``old_names``:
    earlier names of it, still accepted so that old scripts keep working)."""
    return typer.Option("--output", "-o", *old_names, help=help)


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


def _load_fast_predictor(checkpoint: Path, precision: str, engine: str, onnx: Path | None,  # type: ignore[no-untyped-def]
                         threads: int | None, calibration: Path | None = None, gate: Path | None = None,
                         tta: str = "none"):
    """The predictor on the path :func:`brain_tumor.inference.load_predictor` picks; one-line errors."""
    from brain_tumor.model_loading import load_predictor

    _load_predictor(checkpoint)  # a missing or broken checkpoint: one line
    try:
        predictor = load_predictor(checkpoint, precision, engine, onnx, threads, calibration, gate, tta)
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


def _model_data(checkpoint: Path, data_root: Path | None = None,  # type: ignore[no-untyped-def]
                data_flag: str | None = None):
    """Records, images (at the checkpoint's size and pipeline) and labels for a checkpoint's data
    (or ``data_root``); a missing dataset is one line naming the command that fetches it (and
    ``data_flag``, the command's option that names another copy, where it has one)."""
    from brain_tumor.training.fit import load_data

    meta = _checkpoint_meta(checkpoint)
    pre, data_cfg = meta["preprocessing"], meta["config"]["data"]
    root = str(data_root or data_cfg["root"])
    try:
        return load_data(root, pre["image_size"], data_cfg.get("cache_dir"), pre.get("pipeline", "paper"))
    except (ValueError, OSError) as exc:
        _fail(f"{str(exc).splitlines()[0]}; the dataset this model was trained on is not at {root}: "
              f"fetch it with: brain-tumor fetch --data --set data.root={root}"
              + (f", or point {data_flag} at a copy" if data_flag else ""))


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
