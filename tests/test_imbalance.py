"""Class imbalance options: oversampling and a class-weighted loss."""

from __future__ import annotations

import dataclasses

import torch

from brain_tumor.config import RunConfig
from brain_tumor.data.datamodule import balanced_sampler
from brain_tumor.training.fit import build_module


def test_balanced_sampler_draws_classes_equally() -> None:
    labels = torch.tensor([0] * 300 + [1] * 60 + [2] * 140)
    drawn = labels[list(balanced_sampler(labels, seed=0))]
    counts = torch.bincount(drawn, minlength=3).float() / len(drawn)
    assert torch.all((counts - 1 / 3).abs() < 0.05)
    assert list(balanced_sampler(labels, seed=0)) == list(balanced_sampler(labels, seed=0))


def test_class_weighted_loss_weights_rare_classes_more() -> None:
    cfg = RunConfig()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights="none"),
                              train=dataclasses.replace(cfg.train, class_weighted_loss=True))
    module, _ = build_module(cfg, ["glioma", "meningioma", "pituitary"], torch.tensor([0] * 200 + [1] * 50 + [2] * 100))
    w = module.loss_fn.weight
    assert w is not None and w[1] > w[2] > w[0]
    torch.testing.assert_close(w, torch.tensor([350 / 600, 350 / 150, 350 / 300]))
