"""The context penalty (issue 22): what the feature map outside the tumour says of the classes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from brain_tumor.data.counterfactual import ERASED
from brain_tumor.data.datamodule import MASK_GROW, SliceDataset
from brain_tumor.data.erasing import box_mask
from brain_tumor.model import build_classifier, features_fp32_stem, freeze_first_keras_layers
from brain_tumor.model.backbone import preprocessing_for
from brain_tumor.training.losses import context_evidence_penalty
from brain_tumor.training.module import SliceClassifier
from brain_tumor.transforms import train_preset

WEIGHT = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])  # three classes over two features


def _masks(rows: int, size: int = 8, inside: tuple[slice, slice] = (slice(2, 4), slice(2, 4))) -> torch.Tensor:
    masks = torch.zeros(rows, 1, size, size, dtype=torch.uint8)
    masks[:, 0, inside[0], inside[1]] = 1
    return masks


def test_no_evidence_outside_the_tumour_costs_nothing() -> None:
    features = torch.zeros(2, 2, 4, 4)
    features[:, 0, 1, 1] = 9.0  # strong evidence for class 0, all of it in the tumour's cell
    penalty = context_evidence_penalty(features, WEIGHT, _masks(2))
    assert penalty.item() == pytest.approx(0.0, abs=1e-6)


def test_evidence_outside_the_tumour_is_penalised_and_grows_with_it() -> None:
    weak, strong = torch.zeros(2, 2, 4, 4), torch.zeros(2, 2, 4, 4)
    weak[:, 0, 3, 3], strong[:, 0, 3, 3] = 4.0, 40.0  # evidence for class 0 in a cell outside the box
    low = context_evidence_penalty(weak, WEIGHT, _masks(2)).item()
    high = context_evidence_penalty(strong, WEIGHT, _masks(2)).item()
    assert 0 < low < high
    # the penalty is the cross-entropy to uniform of the context's logits, less log C
    logits = torch.tensor([[40.0 / 16, 0.0, -40.0 / 16]])
    assert high == pytest.approx((-torch.log_softmax(logits, 1).mean() - math.log(3)).item(), rel=1e-5)


def test_evidence_the_same_for_every_class_is_no_evidence() -> None:
    features = torch.zeros(1, 2, 4, 4)
    features[0, :, 3, 3] = 5.0  # weights [1, 0], [0, 1] see it alike; [-1, -1] does not
    tied = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    assert context_evidence_penalty(features, tied, _masks(1)).item() == pytest.approx(0.0, abs=1e-6)


def test_slices_without_a_box_are_left_out_and_gradients_reach_only_the_outside() -> None:
    features = torch.zeros(2, 2, 4, 4)
    features[:, 0, 3, 3] = 6.0
    masks = _masks(2)
    masks[1] = 0  # no box known for the second slice
    alone = context_evidence_penalty(features[:1], WEIGHT, masks[:1])
    assert context_evidence_penalty(features, WEIGHT, masks).item() == pytest.approx(alone.item())
    assert context_evidence_penalty(features, WEIGHT, torch.zeros_like(masks)).item() == 0.0
    leaf = features.clone().requires_grad_(True)
    context_evidence_penalty(leaf, WEIGHT, masks).backward()
    assert leaf.grad is not None
    assert leaf.grad[0, :, 3, 3].abs().sum() > 0  # outside the box
    assert leaf.grad[0, :, 1, 1].abs().sum() == 0  # the tumour's cell is free
    assert leaf.grad[1].abs().sum() == 0  # the slice without a box


def _disc_with_tumour(size: int = 64) -> tuple[torch.Tensor, tuple[float, float, float, float]]:
    yy, xx = np.mgrid[:size, :size] / size
    image = np.where((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.16, 0.3, 0.0)
    image[14:24, 36:46] = 1.0
    box = (41 / size, 19 / size, 10 / size, 10 / size)
    return torch.from_numpy((image * 255).astype(np.uint8))[None], box


def test_the_mask_follows_the_augmentation_and_only_training_items_carry_it() -> None:
    image, box = _disc_with_tumour()
    images, labels = image[None].repeat(3, 1, 1, 1), torch.tensor([0, 1, 2])
    torch.manual_seed(0)
    for preset in ("paper", "robust", "robust-light", "torchio"):
        dataset = SliceDataset(images, labels, [0, 1, 2], train_preset(preset), boxes=[box] * 3, with_masks=True)
        for i in range(6):
            moved, label, mask = dataset[i % 3]  # type: ignore[misc]
            assert label == i % 3 and mask.shape == moved.shape and set(mask.unique().tolist()) <= {0, 1}
            assert mask.sum() > 0
            inside, outside = moved[mask > 0].float().mean(), moved[mask == 0].float().mean()
            assert inside > outside + 60, preset  # the bright tumour is where its mask went
    plain = SliceDataset(images, labels, [0, 1, 2], train_preset("paper"), boxes=[box] * 3)
    assert len(plain[0]) == 2
    expected = box_mask(box, (64, 64), MASK_GROW)
    unmoved = SliceDataset(images, labels, [0], None, boxes=[box] * 3, with_masks=True)[0]
    assert np.array_equal(unmoved[2][0].numpy().astype(bool), expected)  # type: ignore[misc]
    no_box = SliceDataset(images, labels, [0], None, boxes=[None] * 3, with_masks=True)[0]
    assert no_box[2].sum() == 0  # type: ignore[misc]


def _module(penalty: float, smoothing: float) -> SliceClassifier:
    torch.manual_seed(0)
    network = build_classifier("none", 3)
    freeze_first_keras_layers(network, 15)
    return SliceClassifier(network, preprocessing_for("none", 64), channels_last=False, label_smoothing=smoothing,
                           context_penalty=penalty)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])  # the shared path and the smoothed one
@pytest.mark.parametrize("erased", [False, True])  # with a counterfactual (tumour-erased) slice or not
def test_the_training_loss_adds_the_weighted_penalty_and_validation_ignores_it(smoothing: float,
                                                                              erased: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 255, (4, 1, 64, 64), dtype=torch.uint8, generator=generator)
    labels = torch.tensor([0, 1, ERASED if erased else 2, 0])
    masks = _masks(4, 64, (slice(20, 40), slice(20, 40)))
    plain, penalised = _module(0.0, smoothing).eval(), _module(2.0, smoothing).eval()
    with torch.no_grad():
        features = features_fp32_stem(penalised.network, penalised.normalize(images))
        penalty = context_evidence_penalty(features, penalised.network.fc.weight, masks).item()
        base = plain.training_step((images, labels, masks), 0).item()
        assert penalty > 0
        assert penalised.training_step((images, labels, masks), 0).item() == pytest.approx(base + 2.0 * penalty,
                                                                                          rel=1e-4)
        assert penalised.training_step((images, labels), 0).item() == pytest.approx(base, rel=1e-5)
        assert penalised._step((images, labels, masks), "val").item() == pytest.approx(
            plain._step((images, labels), "val").item(), rel=1e-5)
