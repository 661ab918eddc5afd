"""A new machine: no shared folder, empty homes. Commands that need data or weights say in one line
what to fetch; `brain-tumor fetch` brings both from a loopback server, and training then runs."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from brain_tumor.cli import app
from brain_tumor.homes import DATASET_DIR, KERAS_H5_NAME
from brain_tumor.model.keras_layers import keras_resnet50_layers
from brain_tumor.model.keras_weights import write_keras_h5_weights
from brain_tumor.training.checkpoint import load_model_checkpoint
from tests.conftest import synthetic_slice
from tests.loopback import Served, serve
from tests.test_figshare_mat import write_cjdata
from tests.test_keras_weights import fake_keras_weights

runner = CliRunner()


@pytest.fixture
def new_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Empty homes, an empty shared folder, nothing else to find."""
    for name in ("BRAIN_TUMOR_DATA", "BRAIN_TUMOR_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BRAIN_TUMOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BRAIN_TUMOR_SHARED", str(tmp_path / "shared"))
    (tmp_path / "shared").mkdir()
    return tmp_path / "home"


def _one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    """The one error line (a failed attempt of a retried download may add its own WARNING line)."""
    lines = [line for line in result.output.strip().splitlines() if not line.startswith("WARNING ")]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return lines[0]


@pytest.mark.parametrize("command", ["reproduce", "train", "cv"])
def test_missing_data_and_weights_name_the_fetch_command(new_machine: Path, command: str) -> None:
    line = _one_line_error(runner.invoke(app, [command]))
    assert line.endswith("fetch them with: brain-tumor fetch")
    assert str(new_machine / "data" / DATASET_DIR) in line and str(new_machine / "weights") in line


def test_only_what_is_missing_is_named(new_machine: Path, class_folder_dataset: Path, tmp_path: Path) -> None:
    line = _one_line_error(runner.invoke(app, ["train", "--set", f"data.root={class_folder_dataset}"]))
    assert line.endswith("fetch it with: brain-tumor fetch --weights") and "no Keras ImageNet weights" in line
    line = _one_line_error(runner.invoke(app, ["cv", "--set", "model.weights=none"]))
    assert line.endswith("fetch it with: brain-tumor fetch --data")
    where = tmp_path / "elsewhere"
    line = _one_line_error(runner.invoke(app, ["reproduce", "-s", f"data.root={where}", "-s", "model.weights=none"]))
    assert line.endswith(f"brain-tumor fetch --data --set data.root={where}")


def test_fetch_without_network_is_one_line(new_machine: Path) -> None:
    closed = "http://127.0.0.1:9"
    line = _one_line_error(runner.invoke(app, ["fetch", "--data", "--figshare-api", f"{closed}/files"]))
    assert "cannot list the figshare release" in line and "no internet?" in line
    line = _one_line_error(runner.invoke(app, ["fetch", "--weights", "--weights-url", f"{closed}/w.h5",
                                               "--weights-md5", "0" * 32, "--attempts", "1"]))
    assert "weights:" in line and "no verified copy after 1 attempts" in line
    line = _one_line_error(runner.invoke(app, ["fetch", "--weights-url", f"{closed}/w.h5"]))
    assert "needs --weights-md5" in line
    assert not (new_machine / "weights").exists() or not any((new_machine / "weights").iterdir())


def figshare_release(n_per_class: int = 12) -> dict[str, bytes]:
    """A small figshare release as served: two zip parts of N.mat files, cvind.mat."""
    rng = np.random.default_rng(0)
    parts = [io.BytesIO(), io.BytesIO()]
    tmp = io.BytesIO()
    index = 0
    with zipfile.ZipFile(parts[0], "w") as z0, zipfile.ZipFile(parts[1], "w") as z1:
        for k in range(n_per_class):
            for label in (1, 2, 3):  # meningioma, glioma, pituitary
                index += 1
                image = synthetic_slice(rng, label - 1, 64).astype(np.int16) * 3
                tmp = io.BytesIO()
                write_cjdata(tmp, label, f"P{k}", image)  # type: ignore[arg-type]
                (z0 if index % 2 else z1).writestr(f"brainTumorDataPublic_{index}/{index}.mat", tmp.getvalue())
    cvind = io.BytesIO()
    with h5py.File(cvind, "w") as f:
        f["cvind"] = (np.arange(index) % 5 + 1).astype(float)[None]
    return {"/part1.zip": parts[0].getvalue(), "/part2.zip": parts[1].getvalue(), "/cvind.mat": cvind.getvalue()}


def keras_h5_bytes(path: Path) -> tuple[bytes, dict[str, np.ndarray]]:
    """A full-size Keras-layout ResNet-50 .h5 with random weights (1000-class head)."""
    rng = np.random.default_rng(2)
    weights = fake_keras_weights(rng)
    weights["predictions/kernel"] = rng.normal(0, 0.02, (2048, 1000)).astype(np.float32)
    weights["predictions/bias"] = np.zeros(1000, np.float32)
    order = [layer.name for layer in keras_resnet50_layers()] + ["avg_pool", "predictions"]
    return write_keras_h5_weights(weights, path, order).read_bytes(), weights


@pytest.mark.slow
def test_fetch_then_train_from_empty_homes(new_machine: Path, tmp_path: Path) -> None:
    files = figshare_release()
    h5, weights = keras_h5_bytes(tmp_path / "generated.h5")
    served = Served(files={**files, "/w.h5": h5}, faults={"/w.h5": ["truncate"], "/part2.zip": ["corrupt"]})
    with serve(served):
        listing = [{"name": n.lstrip("/"), "size": len(b), "computed_md5": hashlib.md5(b).hexdigest(),  # noqa: S324
                    "download_url": served.url(n)} for n, b in files.items()]
        served.files["/files.json"] = json.dumps(listing).encode()
        fetched = runner.invoke(app, ["fetch", "--figshare-api", served.url("files.json"),
                                      "--weights-url", served.url("w.h5"),
                                      "--weights-md5", hashlib.md5(h5).hexdigest()])  # noqa: S324
        assert fetched.exit_code == 0, fetched.output
        again = runner.invoke(app, ["fetch", "--figshare-api", served.url("files.json"),  # cached: no transfer
                                    "--weights-url", served.url("w.h5"), "--weights-md5", hashlib.md5(h5).hexdigest()])
    assert again.exit_code == 0 and len(served.requests) == 1 + 4 + 2  # listing, 3 files + 1 retry, .h5 + resume
    data_root, h5_path = new_machine / "data" / DATASET_DIR, new_machine / "weights" / KERAS_H5_NAME
    assert (data_root / "manifest.csv").is_file() and h5_path.read_bytes() == h5
    assert not list(new_machine.rglob("*.part"))
    assert len((data_root / "manifest.csv").read_text().splitlines()) == 1 + 36

    results, work = tmp_path / "results", tmp_path / "runs"
    trained = runner.invoke(app, ["train", "--results-dir", str(results), "--work-dir", str(work),
                                  "-s", "data.image_size=32", "-s", "data.batch_size=12", "-s", "train.max_epochs=1",
                                  "-s", "data.val_fraction=0.2", "-s", f"data.cache_dir={tmp_path / 'cache'}"])
    assert trained.exit_code == 0, trained.output
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["n_test"] > 0 and set(metrics["recall"]) == {"glioma", "meningioma", "pituitary"}
    network, _ = load_model_checkpoint(work / "model.pt")
    kernel = torch.from_numpy(weights["conv1_conv/kernel"]).permute(3, 2, 0, 1).flip(1)  # frozen: as fetched
    torch.testing.assert_close(network.state_dict()["conv1.weight"].float(), kernel)
