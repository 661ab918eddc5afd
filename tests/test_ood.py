"""Out-of-distribution flag: kNN scores, thresholds, the refuse set, and the flag in predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brain_tumor.evaluation.ood import knn_scores, make_bank, refuse_set, threshold_for_rate
from brain_tumor.inference import Predictor
from tests.conftest import synthetic_slice


def test_knn_scores_near_zero_for_training_points_and_high_far_away() -> None:
    g = torch.Generator().manual_seed(0)
    train = torch.randn(200, 16, generator=g) + 5
    bank = make_bank(train)
    inside = knn_scores(bank, train[:20] + 0.01, k=1)
    outside = knn_scores(bank, -train[:20], k=1)
    assert inside.max() < 0.01 and outside.min() > 1.0


def test_threshold_flags_the_requested_share() -> None:
    scores = np.arange(1000, dtype=float)
    t = threshold_for_rate(scores, 0.05)
    assert abs((scores > t).mean() - 0.05) < 0.002


def test_refuse_set_has_every_kind() -> None:
    kinds = refuse_set()
    assert set(kinds) == {"natural_photo", "blank", "noise", "chest_xray_like"}
    assert all(len(v) >= 5 for v in kinds.values())
    assert all(im.ndim == 2 and 0 <= im.min() and im.max() <= 1 for v in kinds.values() for im in v)


@pytest.mark.slow
def test_fit_ood_stores_flag_used_by_predictions(tiny_checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    from brain_tumor.onnx_runtime import file_sha256
    from brain_tumor.robustness import fit_ood

    checkpoint = Path(shutil.copy(tiny_checkpoint, tmp_path / "model.pt"))
    before = file_sha256(checkpoint)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(np.stack([synthetic_slice(rng, i % 3, 64) for i in range(60)])).unsqueeze(1)
    result = fit_ood(checkpoint, images, list(range(40)), list(range(40, 50)), list(range(50, 60)), tmp_path, 0.1, 3)
    assert file_sha256(checkpoint) == before and (tmp_path / "ood_bank.safetensors").is_file()
    assert (tmp_path / "ood.json").is_file() and (tmp_path / "ood.md").is_file()
    assert set(result["flag_rates"]["knn"]) >= {"val", "test", "blank", "noise", "all_must_refuse"}
    predictor = Predictor.from_checkpoint(checkpoint)
    assert predictor.ood is not None and predictor.ood["k"] == 3
    row = predictor.predict(rng.random((64, 64)).astype(np.float32)).row()
    assert "ood_score" in row and isinstance(row["out_of_distribution"], bool)
    if row["out_of_distribution"]:
        assert row["refer"]


def test_an_ood_bank_of_another_checkpoint_is_ignored(tiny_checkpoint: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    from brain_tumor.training.checkpoint import read_checkpoint, write_ood_companion

    checkpoint = Path(shutil.copy(tiny_checkpoint, tmp_path / "model.pt"))
    write_ood_companion(checkpoint, torch.randn(5, 8), method="knn-cosine", k=3, threshold=0.25, flag_rate_on_val=0.05)
    ood = read_checkpoint(checkpoint)["ood"]
    assert ood["k"] == 3 and ood["threshold"] == 0.25 and tuple(ood["bank"].shape) == (5, 8)
    payload = torch.load(checkpoint, weights_only=True)
    payload["epoch"] = 99  # another checkpoint in the same folder: the bank is not its own
    torch.save(payload, checkpoint)
    assert read_checkpoint(checkpoint)["ood"] is None
    assert "fitted on another checkpoint" in caplog.text
