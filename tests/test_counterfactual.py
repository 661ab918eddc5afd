"""Counterfactual training: tumour-erased slices with no class, control erasures away from the
tumour with the label kept, and the loss that pulls erased slices towards no class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brain_tumor.config import RunConfig, apply_overrides
from brain_tumor.data.counterfactual import ERASED, control_box, counterfactual
from brain_tumor.data.datamodule import SliceDataset
from brain_tumor.data.erasing import box_mask
from brain_tumor.training.module import counterfactual_loss


def head_with_tumour(size: int = 96) -> tuple[torch.Tensor, tuple[float, float, float, float]]:
    yy, xx = np.mgrid[:size, :size] / size
    texture = np.random.default_rng(0).uniform(0.2, 0.4, (size, size))  # no erasure leaves tissue as it was
    image = np.where((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.16, texture, 0.0)
    image[30:42, 20:32] = 1.0  # the tumour
    return torch.from_numpy((image * 255).astype(np.uint8))[None], (26 / size, 36 / size, 12 / size, 12 / size)


def test_erased_slices_lose_the_tumour_and_their_class() -> None:
    image, box = head_with_tumour()
    rng = np.random.default_rng(0)
    seen = {"erased": 0, "control": 0, "plain": 0}
    for _ in range(300):
        out, label = counterfactual(image, box, 2, share=0.3, rng=rng)
        assert out.dtype == torch.uint8 and out.shape == image.shape
        tumour_left = int((out[0, 30:42, 20:32] > 200).sum())
        if label == ERASED:
            seen["erased"] += 1
            assert tumour_left == 0
        elif torch.equal(out, image):
            seen["plain"] += 1
        else:
            seen["control"] += 1
            assert label == 2 and tumour_left == 144  # the tumour untouched, something else erased
            assert int((out[0, 30:42, 20:32] != image[0, 30:42, 20:32]).sum()) == 0
    assert all(60 < seen[k] < 120 for k in ("erased", "control")), seen  # about 30% each
    assert counterfactual(image, box, 1, share=0.0, rng=rng) == (image, 1)


def test_control_box_is_on_tissue_and_clear_of_the_tumour() -> None:
    image, box = head_with_tumour()
    plain = image[0].numpy() / 255.0
    rng = np.random.default_rng(1)
    for _ in range(50):
        found = control_box(plain, box, 0.2, rng)
        assert found is not None and found[2:] == box[2:]
        assert not (box_mask(found, plain.shape, 0.2) & box_mask(box, plain.shape, 0.2)).any()
        assert plain[int(found[1] * 96), int(found[0] * 96)] > 0.02
    whole_head = (0.5, 0.5, 0.9, 0.9)
    assert control_box(plain, whole_head, 0.2, rng) is None


def test_counterfactual_loss_pulls_erased_slices_to_no_class() -> None:
    logits = torch.tensor([[4.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    plain = counterfactual_loss(logits[:1], torch.tensor([0]))
    assert plain == pytest.approx(torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0])).item())
    confident_erased = counterfactual_loss(logits[1:2], torch.tensor([ERASED]))
    flat_erased = counterfactual_loss(logits[2:], torch.tensor([ERASED]))
    assert flat_erased == pytest.approx(np.log(3)) and confident_erased > flat_erased
    logits.requires_grad_(True)
    counterfactual_loss(logits, torch.tensor([0, ERASED, ERASED])).backward()
    assert logits.grad is not None and logits.grad[1, 0] > 0  # an erased slice's confident class is pushed down


def test_dataset_erases_only_in_training_and_only_with_boxes() -> None:
    image, box = head_with_tumour()
    images = image[None].repeat(4, 1, 1, 1)
    labels = torch.tensor([0, 1, 2, 0])
    torch.manual_seed(0)
    train = SliceDataset(images, labels, [0, 1, 2, 3], boxes=[box, box, box, None], counterfactual=0.5)
    drawn = [train[i % 4][1] for i in range(200)]
    assert ERASED in drawn
    assert all(label != ERASED for i, label in enumerate(drawn) if i % 4 == 3)  # no box, never erased
    plain = SliceDataset(images, labels, [0, 1, 2, 3], boxes=[box] * 4, counterfactual=0.0)
    assert [plain[i][1] for i in range(4)] == [0, 1, 2, 0]


def test_counterfactual_setting_is_a_share() -> None:
    assert apply_overrides(RunConfig(), ["train.counterfactual=0.2"]).train.counterfactual == 0.2
    with pytest.raises(ValueError, match="counterfactual"):
        apply_overrides(RunConfig(), ["train.counterfactual=0.8"])
