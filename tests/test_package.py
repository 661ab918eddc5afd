"""Model packages: export, load anywhere a model is taken (folder or hf:// from a local cache),
verified before use, nothing unpickled."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from brain_tumor.cli import app
from brain_tumor.export import export_onnx, export_package, int8_path, quantize_int8
from brain_tumor.inference import Predictor
from brain_tumor.model_loading import load_predictor
from brain_tumor.training.checkpoint import CheckpointError, read_checkpoint
from tests.conftest import synthetic_slice

pytestmark = pytest.mark.slow  # every test here uses `exported`: a full ResNet-50 exported to ONNX and int8


@pytest.fixture(scope="module")
def exported(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A checkpoint with fp32 and int8 exports beside it, and its package."""
    root = tmp_path_factory.mktemp("pkg")
    checkpoint = root / "model.pt"
    shutil.copy(tiny_checkpoint, checkpoint)
    fp32 = export_onnx(checkpoint, root / "model.onnx")
    quantize_int8(fp32, int8_path(fp32), np.random.default_rng(0).integers(0, 256, (16, 1, 64, 64), dtype=np.uint8))
    return checkpoint, export_package(checkpoint, root / "package")


def test_package_holds_safetensors_config_card_onnx_and_sums(exported: tuple[Path, Path]) -> None:
    _, package = exported
    names = sorted(p.name for p in package.iterdir())
    assert names == ["SHA256SUMS", "config.json", "model.int8.onnx", "model.onnx", "model.safetensors",
                     "model_card.md"]
    config = json.loads((package / "config.json").read_text())
    assert config["class_names"] == ["glioma", "meningioma", "pituitary"]
    assert config["preprocessing"]["image_size"] == 64
    assert config["recipe"]["train"]["precision"] and config["package"]["source_checkpoint_sha256"]
    recorded = [v for section in config["recipe"].values() if isinstance(section, dict) for v in section.values()]
    assert config["recipe"]["data"]["root"] and not any(isinstance(v, str) and os.path.isabs(v) for v in recorded)
    assert "Not** a medical device" in (package / "model_card.md").read_text()


def test_package_predicts_like_its_checkpoint(exported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from test_hardware import SAPPHIRE, ZEN3

    from brain_tumor import model_loading
    from brain_tumor.hardware import cpu_info_from

    checkpoint, package = exported
    x = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    reference = Predictor.from_checkpoint(checkpoint).logits(x).softmax(1)
    same = Predictor.from_checkpoint(package).logits(x).softmax(1)
    assert (same - reference).abs().max() < 1e-5  # fp32 from safetensors: the same network
    monkeypatch.setattr(model_loading, "detect_cpu", lambda: cpu_info_from(ZEN3))  # a CPU without AMX
    int8 = load_predictor(package)  # engine auto finds the int8 export inside the package
    assert int8.compute["engine"]["precision"] == "int8"
    assert (int8.logits(x).softmax(1) - reference).abs().max() < 0.1  # int8 of an untrained 64-px net
    monkeypatch.setattr(model_loading, "detect_cpu", lambda: cpu_info_from(SAPPHIRE))  # with AMX: OpenVINO
    openvino = load_predictor(package).compute["engine"]
    assert openvino["engine"] == "openvino" and Path(openvino["onnx_path"]).name == "model.onnx"


def test_predict_and_serve_take_a_package_and_a_hub_id_from_the_local_cache(
        exported: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from brain_tumor.serve.app import ServiceSettings, create_app

    checkpoint, package = exported
    Image.fromarray(synthetic_slice(np.random.default_rng(0), 1, 64)).save(tmp_path / "s.png")
    cache = tmp_path / "hub"  # the layout huggingface_hub keeps: refs/main -> snapshots/<commit>/
    snapshot = cache / "models--team--brain-tumor" / "snapshots" / ("a" * 40)
    shutil.copytree(package, snapshot)
    (cache / "models--team--brain-tumor" / "refs").mkdir()
    (cache / "models--team--brain-tumor" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import importlib

    import huggingface_hub.constants

    importlib.reload(huggingface_hub.constants)
    probabilities = []
    for model in (str(checkpoint), str(package), "hf://team/brain-tumor"):
        result = CliRunner().invoke(app, ["predict", str(tmp_path / "s.png"), "-m", model, "--engine", "pytorch",
                                          "--precision", "fp32", "--json", str(tmp_path / "p.json")])
        assert result.exit_code == 0, result.output
        probabilities.append(json.loads((tmp_path / "p.json").read_text())[0]["p_glioma"])
    assert probabilities[1] == pytest.approx(probabilities[0], abs=1e-5)
    assert probabilities[2] == pytest.approx(probabilities[0], abs=1e-5)
    client = TestClient(create_app(ServiceSettings(package, engine="pytorch", precision="fp32")))
    served = client.post("/v1/predict", files={"file": ("s.png", (tmp_path / "s.png").read_bytes())}).json()
    assert served["probabilities"]["glioma"] == pytest.approx(probabilities[0], abs=1e-5)
    missing = CliRunner().invoke(app, ["predict", str(tmp_path / "s.png"), "-m", "hf://team/absent"])
    assert missing.exit_code == 2 and "not in the local cache" in missing.output


def test_tampered_or_incomplete_package_is_one_clear_error(exported: tuple[Path, Path], tmp_path: Path) -> None:
    _, package = exported
    tampered = tmp_path / "tampered"
    shutil.copytree(package, tampered)
    (tampered / "model.safetensors").write_bytes((tampered / "model.safetensors").read_bytes()[:-1] + b"\0")
    with pytest.raises(CheckpointError, match="does not match its SHA-256"):
        read_checkpoint(tampered)
    incomplete = tmp_path / "incomplete"
    shutil.copytree(package, incomplete)
    (incomplete / "config.json").unlink()
    (incomplete / "config.json").mkdir()  # still looks like a package, but the file is gone
    with pytest.raises(CheckpointError):
        read_checkpoint(incomplete)
    gone = tmp_path / "gone"
    shutil.copytree(package, gone)
    (gone / "model.onnx").unlink()
    result = CliRunner().invoke(app, ["predict", str(tmp_path), "-m", str(gone)])
    assert result.exit_code == 2 and "model.onnx is missing" in result.output and "Traceback" not in result.output
