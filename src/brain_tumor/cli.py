"""The ``brain-tumor`` command line: thin shells over the library."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Classify brain-tumour MRI slices with a fine-tuned ResNet-50, and prove how well it does.")

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML/JSON config file.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override, e.g. train.lr=3e-4.")]


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _config(config: Path | None, overrides: list[str] | None):  # type: ignore[no-untyped-def]
    from brain_tumor.config import load_config

    try:
        return load_config(config, overrides or [])
    except (ValueError, TypeError, OSError) as exc:
        _fail(str(exc))


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Set up logging."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")


@app.command()
def prepare(
    source: Annotated[Path, typer.Argument(help="Folder of figshare N.mat files (+ cvind.mat).")],
    output: Annotated[Path, typer.Argument(help="Where PNGs and manifest.csv are written.")],
    download: Annotated[bool, typer.Option(help="Download the figshare release into SOURCE first.")] = False,
) -> None:
    """Convert the official figshare MATLAB release into images + manifest.csv."""
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
def reproduce(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    results_dir: Annotated[Path, typer.Option(help="Committed metrics and figures.")] = Path("results/paper-split"),
    work_dir: Annotated[Path, typer.Option(help="Checkpoints and TensorBoard logs.")] = Path("runs/paper-split"),
    scenario: Annotated[Optional[list[int]], typer.Option(help="Keras layers to freeze; repeatable.")] = None,
) -> None:
    """Reproduce the paper: both freeze scenarios on the paper split, with the comparison report."""
    from brain_tumor.reproduce import SCENARIOS
    from brain_tumor.reproduce import reproduce as run

    cfg = _config(config, overrides)
    try:
        runs = run(cfg, results_dir, work_dir, tuple(scenario or SCENARIOS))
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    for n, m in runs.items():
        typer.echo(f"freeze {n}: test accuracy {m['accuracy']:.4f}, meningioma recall {m['recall']['meningioma']:.3f}")
    typer.echo(f"report: {results_dir / 'report.html'}")


@app.command()
def train(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    results_dir: Annotated[Path, typer.Option(help="Run folder for metrics and figures.")] = Path("results/train"),
    work_dir: Annotated[Path, typer.Option(help="Checkpoints.")] = Path("runs/train"),
) -> None:
    """Train and evaluate one run on the paper split (freeze from model.freeze_layers)."""
    from brain_tumor.reproduce import run_scenario
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
    checkpoint: Annotated[Path, typer.Argument(help="A model.pt written by train/reproduce.")],
    split: Annotated[Path, typer.Option(help="split.json of the run.")] = Path("results/paper-split/split.json"),
    data_root: Annotated[Optional[Path], typer.Option(help="Dataset folder (default from the checkpoint).")] = None,
    output: Annotated[Path, typer.Option(help="Where metrics.json goes.")] = Path("results/evaluate"),
) -> None:
    """Evaluate a checkpoint on the test part of a saved split."""
    import torch

    from brain_tumor.data.splits import load_split
    from brain_tumor.evaluation.run_eval import evaluate_checkpoint, write_json
    from brain_tumor.training.fit import load_data

    meta = torch.load(checkpoint, map_location="cpu", weights_only=True)
    data_cfg = meta["config"]["data"]
    _, images, labels = load_data(str(data_root or data_cfg["root"]), meta["preprocessing"]["image_size"],
                                  data_cfg.get("cache_dir"))
    metrics, _, _ = evaluate_checkpoint(checkpoint, images, labels, load_split(split).test)
    write_json(metrics, output / "metrics.json")
    typer.echo(f"accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f} -> {output / 'metrics.json'}")
