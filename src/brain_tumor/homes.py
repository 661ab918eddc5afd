"""Where the dataset and the Keras weights live by default, and whether they are there.

Order, first match wins (each a folder):

1. the settings ``data.root`` / ``model.weights_path`` (``--set`` or a config file);
2. ``$BRAIN_TUMOR_DATA`` / ``$BRAIN_TUMOR_WEIGHTS`` (the data and weights homes);
3. ``$BRAIN_TUMOR_HOME/data`` / ``$BRAIN_TUMOR_HOME/weights``;
4. the team's shared folder, only when it is asked for: ``$BRAIN_TUMOR_SHARED`` is set (``none`` or
   empty switches it off), or this package runs from a source checkout with ``../shared`` beside it;
5. ``~/.cache/brain-tumor/data`` / ``~/.cache/brain-tumor/weights`` (``$XDG_CACHE_HOME`` respected).

Nothing here imports the rest of the package, so :mod:`brain_tumor.config` can use it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DATASET_DIR = "figshare-cheng2015"  # the dataset root inside a data home: PNGs + manifest.csv
TFJS_DIR = "resnet50-keras-imagenet"  # the team's TensorFlow.js export inside shared/weights
KERAS_H5_NAME = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"  # the file tf.keras downloads

_REPO = Path(__file__).resolve().parents[2]  # the checkout root when run from src/ (editable install)
CHECKOUT_SHARED = _REPO.parent / "shared"


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def shared_folder(env: Mapping[str, str] | None = None) -> Path | None:
    """The team's shared folder when it is in use, else ``None``."""
    raw = _env(env).get("BRAIN_TUMOR_SHARED")
    if raw is not None:
        return None if raw.strip().lower() in ("", "none") else Path(raw).expanduser()
    in_checkout = (_REPO / "pyproject.toml").is_file() and (_REPO / "src" / "brain_tumor").is_dir()
    return CHECKOUT_SHARED if in_checkout and CHECKOUT_SHARED.is_dir() else None


def cache_home(env: Mapping[str, str] | None = None) -> Path:
    """``$BRAIN_TUMOR_HOME``, else ``$XDG_CACHE_HOME/brain-tumor``, else ``~/.cache/brain-tumor``."""
    e = _env(env)
    if e.get("BRAIN_TUMOR_HOME"):
        return Path(e["BRAIN_TUMOR_HOME"]).expanduser()
    return Path(e.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "brain-tumor"


def default_data_root(env: Mapping[str, str] | None = None) -> str:
    """The dataset folder used when ``data.root`` is not set."""
    e = _env(env)
    if e.get("BRAIN_TUMOR_DATA"):
        return str(Path(e["BRAIN_TUMOR_DATA"]).expanduser() / DATASET_DIR)
    shared = None if e.get("BRAIN_TUMOR_HOME") else shared_folder(e)
    if shared is not None:
        return str(shared / "data" / DATASET_DIR)
    return str(cache_home(e) / "data" / DATASET_DIR)


def default_weights_path(env: Mapping[str, str] | None = None) -> str:
    """The Keras weights used when ``model.weights_path`` is not set: a weights home (holding
    :data:`KERAS_H5_NAME`), or the shared TensorFlow.js export."""
    e = _env(env)
    if e.get("BRAIN_TUMOR_WEIGHTS"):
        return str(Path(e["BRAIN_TUMOR_WEIGHTS"]).expanduser())
    shared = None if e.get("BRAIN_TUMOR_HOME") else shared_folder(e)
    if shared is not None:
        return str(shared / "weights" / TFJS_DIR)
    return str(cache_home(e) / "weights")


def find_keras_weights(path: str | Path | None) -> Path | None:
    """The Keras weights at ``path``: a ``.h5`` file, a TensorFlow.js folder (with ``model.json``)
    or a folder holding :data:`KERAS_H5_NAME`; ``None`` when there are none."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return path
    if (path / "model.json").is_file():
        return path
    if (path / KERAS_H5_NAME).is_file():
        return path / KERAS_H5_NAME
    return None


def keras_h5_target(path: str | Path) -> Path:
    """Where ``brain-tumor fetch --weights`` writes the ``.h5`` for a ``model.weights_path``."""
    path = Path(path)
    return path if path.suffix == ".h5" else path / KERAS_H5_NAME


def dataset_present(root: str | Path) -> bool:
    """Whether ``root`` is a non-empty folder (what is in it is checked when it is read)."""
    root = Path(root)
    return root.is_dir() and any(root.iterdir())


def download_folder(root: str | Path) -> Path:
    """Where the figshare release (zips, ``.mat`` files) for the dataset at ``root`` is kept."""
    root = Path(root)
    return root.with_name(root.name + "-download")
