"""Fetch, verify and cache the dataset and the Keras ImageNet ResNet-50 weights on first use.

The dataset is the official figshare release, converted once into PNGs + ``manifest.csv``; the
weights are the ``.h5`` that ``tf.keras.applications.ResNet50(weights="imagenet")`` downloads.
Both land where the run's settings look for them (see :mod:`brain_tumor.homes`).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from brain_tumor.data.download import FIGSHARE_API as FIGSHARE_API  # re-exported: the CLI's default
from brain_tumor.data.download import DownloadError, Expected, download_figshare, download_file
from brain_tumor.data.manifest import convert_figshare_mat
from brain_tumor.homes import (
    KERAS_H5_NAME,
    dataset_present,
    download_folder,
    find_keras_weights,
    keras_h5_target,
)

log = logging.getLogger(__name__)

# Keras' own source, keras-team/keras keras/src/applications/resnet.py (commit 3422977a5e38, Aug 2026):
# BASE_WEIGHTS_PATH = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/",
# file_name = model_name + "_weights_tf_dim_ordering_tf_kernels.h5" (include_top=True), and
# WEIGHTS_HASHES["resnet50"][0] = "2cb95161c43110f7111970584f804107"; 32 hex digits are an MD5 for
# keras.utils.get_file (hash_algorithm "auto": sha256 only for 64 digits, keras/src/utils/file_utils.py).
KERAS_RESNET50_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + KERAS_H5_NAME
KERAS_RESNET50_MD5 = "2cb95161c43110f7111970584f804107"


class FetchError(OSError):
    """Fetching failed; the message is one line."""


@dataclass(frozen=True)
class Missing:
    """What a run needs and cannot find."""

    data: str | None = None  # why the dataset is missing, or None
    weights: str | None = None  # why the weights are missing, or None

    def __bool__(self) -> bool:
        return bool(self.data or self.weights)

    def fetch_flags(self) -> list[str]:
        """The ``brain-tumor fetch`` flags that bring what is missing."""
        if self.data and self.weights:
            return []
        return ["--data"] if self.data else ["--weights"]


def find_missing(data_root: str | Path, weights: str, weights_path: str | Path | None) -> Missing:
    """Whether the dataset at ``data_root`` and (for ``keras`` weights) the weights are there."""
    data = None if dataset_present(data_root) else f"{data_root}: not a folder (the dataset is missing)"
    if Path(data_root).is_dir() and data:
        data = f"{data_root}: empty folder (the dataset is missing)"
    need_weights = weights == "keras" and find_keras_weights(weights_path) is None
    return Missing(data, f"{weights_path}: no Keras ImageNet weights there" if need_weights else None)


def missing_line(missing: Missing, command: str) -> str:
    """One line: what is missing and the command that fetches it."""
    what = "; ".join(m for m in (missing.data, missing.weights) if m)
    return f"{what}; fetch {'it' if missing.fetch_flags() else 'them'} with: {command}"


def fetch_dataset(root: str | Path, api_url: str = FIGSHARE_API, attempts: int = 3) -> Path:
    """Download the figshare release beside ``root`` (``<root>-download``, resumable) and convert it
    into ``root`` (PNGs + ``manifest.csv``), which appears only when the conversion is complete."""
    root = Path(root)
    if dataset_present(root):
        log.info("dataset already at %s", root)
        return root
    raw = download_folder(root)
    try:
        download_figshare(raw, api_url, attempts)
    except DownloadError as exc:
        raise FetchError(f"dataset: {exc}") from None
    building = root.with_name(root.name + ".part")
    if building.exists():
        shutil.rmtree(building)  # a conversion cut off earlier
    building.mkdir(parents=True)
    records = convert_figshare_mat(raw, building)
    if root.is_dir():
        root.rmdir()  # empty (dataset_present said so)
    os.replace(building, root)
    log.info("dataset: %d slices in %s (the release stays in %s)", len(records), root, raw)
    return root


def fetch_keras_weights(weights_path: str | Path, url: str = KERAS_RESNET50_URL,
                        md5: str = KERAS_RESNET50_MD5, attempts: int = 3) -> Path:
    """The Keras ImageNet ResNet-50 ``.h5`` at ``weights_path`` (a ``.h5`` path or a weights home),
    downloaded and MD5-checked when absent."""
    found = find_keras_weights(weights_path)
    if found is not None:
        log.info("Keras weights already at %s", found)
        return found
    try:
        return download_file(url, keras_h5_target(weights_path), Expected(digest=md5, algorithm="md5"), attempts)
    except DownloadError as exc:
        raise FetchError(f"weights: {exc}") from None
