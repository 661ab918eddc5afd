"""Data-parallel training through Lightning's DDP: two CPU processes over gloo."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import lightning as L
import pytest
import torch

from brain_tumor.config import RunConfig, apply_overrides
from brain_tumor.training.checkpoint import load_model_checkpoint
from brain_tumor.training.fit import fit, prepare_data


class RecordBatches(L.Callback):
    """Write a digest of every training image each rank sees to ``<dir>/rank<k>.txt``."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object,
                             batch_idx: int) -> None:
        images = batch[0]  # type: ignore[index]
        with (self.out_dir / f"rank{trainer.global_rank}.txt").open("a") as f:
            for image in images:
                f.write(hashlib.sha1(image.numpy().tobytes()).hexdigest() + "\n")


def config_for(root: Path, tmp_path: Path, **train: object) -> RunConfig:
    cfg = apply_overrides(RunConfig(), [
        f"data.root={root}", "data.image_size=32", "data.batch_size=4", f"data.cache_dir={tmp_path / 'cache'}",
        "data.augmentation=none", "model.weights=none", "train.max_epochs=1", "data.val_fraction=0.2",
        "train.accelerator=cpu"])
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))


@pytest.mark.slow
def test_two_process_ddp_shards_data_and_writes_one_model(class_folder_dataset: Path, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    ddp = config_for(class_folder_dataset, tmp_path, strategy="ddp_spawn", devices="2")
    data = prepare_data(ddp, tmp_path / "split.json")
    result = fit(ddp, data, tmp_path / "ddp", tmp_path / "ddp-runs", [RecordBatches(seen)])
    assert result.global_zero and result.checkpoint.is_file()
    rank0 = (seen / "rank0.txt").read_text().split()
    rank1 = (seen / "rank1.txt").read_text().split()
    n_train = len(data.split.train)
    padding = (-n_train) % 2  # DistributedSampler repeats a sample to even the shards
    assert len(rank0) > 0 and len(rank1) > 0
    assert len(set(rank0) & set(rank1)) <= padding
    assert len(set(rank0) | set(rank1)) >= n_train - 2 * 4  # drop_last may drop < one batch per rank

    single = config_for(class_folder_dataset, tmp_path)
    single_result = fit(single, data, tmp_path / "single", tmp_path / "single-runs")
    ddp_net, _ = load_model_checkpoint(result.checkpoint)
    single_net, _ = load_model_checkpoint(single_result.checkpoint)
    ddp_state, single_state = ddp_net.state_dict(), single_net.state_dict()
    assert ddp_state.keys() == single_state.keys()
    assert all(ddp_state[k].shape == single_state[k].shape for k in ddp_state)
    assert any(not torch.equal(ddp_state[k], single_state[k]) for k in ddp_state if k.startswith("fc"))
