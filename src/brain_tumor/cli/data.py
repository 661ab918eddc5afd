"""Getting the data: ``prepare`` and ``fetch``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from brain_tumor.cli.common import ConfigOpt, SetOpt, _config, _fail, _fetch


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
