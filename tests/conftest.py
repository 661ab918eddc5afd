"""Shared fixtures: synthetic slices and the optional real shared folder."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brain_tumor.config import SHARED

DATA = SHARED / "data" / "figshare-cheng2015"
WEIGHTS = SHARED / "weights" / "resnet50-keras-imagenet"
LAYERS_TSV = SHARED / "reference" / "keras_resnet50_layers.tsv"

needs_data = pytest.mark.skipif(not (DATA / "manifest.csv").is_file(), reason="shared dataset absent")
needs_weights = pytest.mark.skipif(not (WEIGHTS / "model.json").is_file(), reason="shared weights absent")


@pytest.fixture(autouse=True)
def root_logging_restored() -> Iterator[None]:
    """A CLI test sets up logging on the test runner's stream, closed once the command returns:
    put the root logger back as it was, so later tests' log lines do not fail to print."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def bf16_probe_cache_kept_apart(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """precision auto may time this CPU and cache the answer under its kind; tests that pretend to
    be another CPU must not leave this machine's timing under that kind in the user's cache."""
    from brain_tumor import bf16_probe

    folder = tmp_path_factory.getbasetemp() / "bf16-probe-cache"
    monkeypatch.setattr(bf16_probe, "cache_home", lambda: folder)


def synthetic_slice(rng: np.random.Generator, label: int, size: int = 48) -> np.ndarray:
    """A dark 'head' disc with a bright blob whose position depends on the class."""
    yy, xx = np.mgrid[:size, :size] / size
    image = 60 * ((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.16)
    cy, cx = [(0.35, 0.35), (0.5, 0.7), (0.7, 0.4)][label]
    image = image + 180 * ((yy - cy) ** 2 + (xx - cx) ** 2 < 0.01)
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def tiny_run_settings(dataset: Path, cache: Path, epochs: int = 1) -> list[str]:
    """``--set`` options for a CLI run that trains a randomly initialised ResNet-50 on ``dataset``
    at 32 px in seconds."""
    settings = [f"data.root={dataset}", "data.image_size=32", "data.batch_size=8", f"data.cache_dir={cache}",
                "model.weights=none", f"train.max_epochs={epochs}", "data.val_fraction=0.2"]
    return [arg for s in settings for arg in ("--set", s)]


@pytest.fixture
def class_folder_dataset(tmp_path: Path) -> Path:
    """``glioma_tumor/``, ``Meningioma/``, ``pituitary/`` with 12 synthetic PNGs each."""
    rng = np.random.default_rng(0)
    root = tmp_path / "folders"
    for label, folder in enumerate(["glioma_tumor", "Meningioma", "pituitary"]):
        (root / folder).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(synthetic_slice(rng, label)).save(root / folder / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 3-class ResNet-50 (v1 layout) checkpoint at 64 px, written as train does."""
    import torch

    from brain_tumor.config import RunConfig, to_dict
    from brain_tumor.model import build_classifier, preprocessing_for
    from brain_tumor.training.checkpoint import save_model_checkpoint

    torch.manual_seed(0)
    network = build_classifier("none", 3).eval()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    return save_model_checkpoint(path, network, architecture="resnet50-v1",
                                 class_names=["glioma", "meningioma", "pituitary"],
                                 preprocessing=preprocessing_for("keras", 64), config=to_dict(RunConfig()),
                                 epoch=0, metrics={})
