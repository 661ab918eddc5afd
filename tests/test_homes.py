"""Where the dataset and weights are looked for: settings, environment, shared folder, cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from brain_tumor.config import load_config
from brain_tumor.homes import (
    DATASET_DIR,
    KERAS_H5_NAME,
    default_data_root,
    default_weights_path,
    find_keras_weights,
    keras_h5_target,
    shared_folder,
)


def test_order_of_the_defaults(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    env = {"BRAIN_TUMOR_SHARED": str(shared), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert default_data_root(env) == str(shared / "data" / DATASET_DIR)
    assert default_weights_path(env) == str(shared / "weights" / "resnet50-keras-imagenet")
    env["BRAIN_TUMOR_HOME"] = str(tmp_path / "home")  # a home wins over the shared folder
    assert default_data_root(env) == str(tmp_path / "home" / "data" / DATASET_DIR)
    assert default_weights_path(env) == str(tmp_path / "home" / "weights")
    env.update(BRAIN_TUMOR_DATA=str(tmp_path / "d"), BRAIN_TUMOR_WEIGHTS=str(tmp_path / "w"))
    assert default_data_root(env) == str(tmp_path / "d" / DATASET_DIR)
    assert default_weights_path(env) == str(tmp_path / "w")
    off = {"BRAIN_TUMOR_SHARED": "none", "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert shared_folder(off) is None
    assert default_data_root(off) == str(tmp_path / "xdg" / "brain-tumor" / "data" / DATASET_DIR)


def test_settings_win_and_environment_is_read_when_the_config_is_made(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    monkeypatch.setenv("BRAIN_TUMOR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BRAIN_TUMOR_DATA", raising=False)
    monkeypatch.delenv("BRAIN_TUMOR_WEIGHTS", raising=False)
    cfg = load_config()
    assert cfg.data.root == str(tmp_path / "home" / "data" / DATASET_DIR)
    assert cfg.model.weights_path == str(tmp_path / "home" / "weights")
    cfg = load_config(None, [f"data.root={tmp_path / 'mine'}", f"model.weights_path={tmp_path / 'w.h5'}"])
    assert (cfg.data.root, cfg.model.weights_path) == (str(tmp_path / "mine"), str(tmp_path / "w.h5"))


def test_finding_weights(tmp_path: Path) -> None:
    assert find_keras_weights(tmp_path) is None and find_keras_weights(None) is None
    assert keras_h5_target(tmp_path) == tmp_path / KERAS_H5_NAME
    assert keras_h5_target(tmp_path / "x.h5") == tmp_path / "x.h5"
    (tmp_path / KERAS_H5_NAME).write_bytes(b"")
    assert find_keras_weights(tmp_path) == tmp_path / KERAS_H5_NAME
    (tmp_path / "model.json").write_text("{}")
    assert find_keras_weights(tmp_path) == tmp_path  # a TensorFlow.js folder first


def test_torchvision_weights_ignore_the_keras_weights_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torchvision

    from brain_tumor.model import backbone

    asked: list[object] = []

    def fake(weights_file: object = None) -> object:
        asked.append(weights_file)
        return torchvision.models.resnet18(weights=None)

    monkeypatch.setattr(backbone, "load_torchvision_imagenet", fake)
    backbone.build_classifier("torchvision", 3, tmp_path)  # the default weights_path: a folder
    backbone.build_classifier("torchvision", 3, tmp_path / "tv.pth")  # a file: passed on (missing: it errors)
    assert asked == [None, tmp_path / "tv.pth"]
