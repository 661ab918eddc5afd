"""A malicious checkpoint planted wherever the code loads one: no code runs, one line."""

from __future__ import annotations

import os
from pathlib import Path

import lightning  # noqa: F401  (imported here: its log handler binds to the stderr of the importing code)
import pytest
import torch
from typer.testing import CliRunner

from brain_tumor.cli import app


class Payload:
    """Unpickling this runs ``touch marker``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": Payload(marker), "epoch": 0}, path)
    return path


@pytest.mark.parametrize("command", [
    ["predict", "{img}", "-m", "{ckpt}"],
    ["explain", "{img}", "-m", "{ckpt}"],
    ["export", "-m", "{ckpt}", "--output", "{tmp}/m.onnx"],
    ["evaluate", "-m", "{ckpt}"],
    ["serve", "-m", "{ckpt}", "--port", "0"],
    ["ood", "-m", "{ckpt}", "--split", "{tmp}/split.json"],
    ["trust", "--run-dir", "{tmp}", "--checkpoint", "{ckpt}"],
])
def test_model_commands_refuse_a_planted_checkpoint(command: list[str], tmp_path: Path) -> None:
    from PIL import Image

    marker = tmp_path / "pwned"
    ckpt = plant(tmp_path / "model.pt", marker)
    Image.new("L", (64, 64), 30).save(tmp_path / "x.png")
    args = [a.format(img=tmp_path / "x.png", ckpt=ckpt, tmp=tmp_path) for a in command]
    result = CliRunner().invoke(app, args)
    assert not marker.exists(), "code ran while loading a checkpoint"
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_training_resume_refuses_a_planted_last_checkpoint(class_folder_dataset: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    work = tmp_path / "runs"
    plant(work / "last.ckpt", marker)
    result = CliRunner().invoke(app, [
        "train", "--results-dir", str(tmp_path / "results"), "--work-dir", str(work),
        "--set", f"data.root={class_folder_dataset}", "--set", "data.image_size=32", "--set", "model.weights=none",
        "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "train.max_epochs=1"])
    assert not marker.exists(), "code ran while resuming"
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "last.ckpt" in result.output


@pytest.mark.parametrize("size", [0, "abc", 10**6])
def test_a_checkpoint_that_describes_an_impossible_model_is_one_line(
        size: object, tiny_checkpoint: Path, tmp_path: Path) -> None:
    from PIL import Image

    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["preprocessing"]["image_size"] = size
    torch.save(payload, tmp_path / "odd.pt")
    Image.new("L", (64, 64), 30).save(tmp_path / "x.png")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "x.png"), "-m", str(tmp_path / "odd.pt")])
    assert result.exit_code == 2 and "unusable model description" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
