"""Test-time BatchNorm adaptation: statistics re-estimated on the new source's images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from brain_tumor.bn_adaptation import MIN_IMAGES, adapt_batchnorm
from tests.conftest import synthetic_slice


def toy_network(source: torch.Tensor) -> nn.Module:
    """conv -> BatchNorm -> linear, its BatchNorm statistics estimated on ``source``."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4, momentum=None), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    network.train()
    with torch.no_grad():
        network(source)
    return network.eval()


def test_adapted_statistics_undo_a_gain_and_offset_of_the_new_source() -> None:
    source = torch.randn(64, 1, 8, 8)
    network = toy_network(source)
    before = network[1].running_mean.clone()
    target = source * 3 + 5  # another scanner: same anatomy, other gain and offset
    adapted = adapt_batchnorm(network, [target])
    with torch.no_grad():
        reference, plain, fixed = network(source), network(target), adapted(target)
    assert torch.equal(network[1].running_mean, before)  # the original is not touched
    # back to the source's outputs, up to BatchNorm's epsilon (relatively smaller at 9x the variance)
    assert (fixed - reference).abs().max() < 0.1 * (plain - reference).abs().max()
    in_batches = adapt_batchnorm(network, [target[:32], target[32:]])  # an average over batches
    assert torch.allclose(in_batches[1].running_mean, adapted[1].running_mean, atol=1e-5)
    half = adapt_batchnorm(network, [target], prior=0.5)
    assert torch.allclose(half[1].running_mean, (before + adapted[1].running_mean) / 2, atol=1e-5)
    with pytest.raises(ValueError, match=f"at least {MIN_IMAGES}"):
        adapt_batchnorm(network, [target[:MIN_IMAGES - 1]])
    with pytest.raises(ValueError, match="prior"):
        adapt_batchnorm(network, [target], prior=1.0)


def test_batches_of_one_class_each_give_the_pooled_statistics() -> None:
    torch.manual_seed(1)
    first, second = torch.randn(32, 1, 8, 8) - 2, torch.randn(32, 1, 8, 8) + 2  # sorted: unlike batches
    network = toy_network(torch.randn(64, 1, 8, 8))
    pooled = adapt_batchnorm(network, [torch.cat([first, second])])
    sorted_batches = adapt_batchnorm(network, [first, second[:16], second[16:]])  # and a short last batch
    for a, b in ((pooled[1].running_mean, sorted_batches[1].running_mean),
                 (pooled[1].running_var, sorted_batches[1].running_var)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def _collection(root: Path, per_class: int) -> Path:
    rng = np.random.default_rng(0)
    for k, folder in enumerate(["glioma_tumor", "meningioma_tumor", "pituitary_tumor"]):
        (root / folder).mkdir(parents=True)
        for i in range(per_class):
            image = synthetic_slice(rng, k, 64).astype(np.float32) * 0.5 + 40  # a darker, offset source
            Image.fromarray(image.astype(np.uint8)).save(root / folder / f"{i}.png")
    return root


def test_evaluate_a_collection_after_adapting_to_it(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from brain_tumor.cli import app

    out = tmp_path / "out"
    args = ["evaluate", "-m", str(tiny_checkpoint), "--output", str(out), "--adapt-bn", "--no-scope-check"]
    few = CliRunner().invoke(app, [*args, "--data", str(_collection(tmp_path / "few", 4))])
    assert few.exit_code == 2 and f"at least {MIN_IMAGES} readable images" in few.output
    result = CliRunner().invoke(app, [*args, "--data", str(_collection(tmp_path / "many", 6)), "--bn-prior", "0.2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bn_adapted"] and metrics["bn_prior"] == 0.2 and metrics["n_images"] == 18
    assert metrics["compute"]["bn_adaptation"]["n_images"] == 18 and isinstance(metrics["compute"]["engine"], dict)
    split = CliRunner().invoke(app, ["evaluate", "-m", str(tiny_checkpoint), "--adapt-bn"])
    assert split.exit_code == 2 and "apply with --data" in split.output


@pytest.mark.slow
def test_shift_test_scores_each_model_also_adapted_to_each_shifted_set(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from brain_tumor.robustness import run_shift_test

    root = _collection(tmp_path / "slices", 6)
    paths = sorted(str(p) for p in root.rglob("*.png"))
    labels = np.array([["glioma_tumor", "meningioma_tumor", "pituitary_tumor"].index(Path(p).parent.name)
                       for p in paths])
    groups = [f"P{i // 2}" for i in range(len(paths))]
    results = run_shift_test({"m": tiny_checkpoint}, paths, labels, groups, tmp_path / "out", bn_prior=0.0,
                             families=["gamma", "bit_depth"])
    assert set(results) == {"m", "m+bn-adapted"} and results["m+bn-adapted"]["bn_adapted"]
    assert set(results["m"]["shifts"]) == {"gamma", "bit_depth"}
    report = json.loads((tmp_path / "out" / "shift.json").read_text())
    assert set(report["statistics"]["adapted_vs_own"]) == {"m+bn-adapted"}
    assert "m+bn-adapted/gamma/3.0" in (tmp_path / "out" / "shift_predictions.csv").read_text().splitlines()[0]
    assert "Test-time BatchNorm adaptation" in (tmp_path / "out" / "shift.md").read_text()
    with pytest.raises(ValueError, match="unknown shift families"):
        run_shift_test({"m": tiny_checkpoint}, paths, labels, groups, tmp_path / "out", families=["warp"])
