"""Counterfactual training: tumour-erased slices with no class, control erasures away from the
tumour with the label kept, and the loss that pulls erased slices towards no class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brain_tumor.data.counterfactual import ERASED, control_box, counterfactual, region_mask
from brain_tumor.data.datamodule import SliceDataset
from brain_tumor.data.erasing import box_slices
from brain_tumor.training.losses import counterfactual_loss

SIZE = 96
TUMOUR = (slice(30, 42), slice(20, 32))


def head_with_tumour(size: int = SIZE) -> tuple[torch.Tensor, tuple[float, float, float, float]]:
    yy, xx = np.mgrid[:size, :size] / size
    texture = np.random.default_rng(0).uniform(0.2, 0.4, (size, size))  # no erasure leaves tissue as it was
    image = np.where((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.16, texture, 0.0)
    image[TUMOUR] = 1.0
    return torch.from_numpy((image * 255).astype(np.uint8))[None], (26 / size, 36 / size, 12 / size, 12 / size)


def test_erased_slices_lose_the_tumour_and_controls_keep_it() -> None:
    image, box = head_with_tumour()
    rng = np.random.default_rng(0)
    seen = {"erased": 0, "control": 0, "plain": 0}
    for _ in range(300):
        out, label = counterfactual(image, box, 2, share=0.3, rng=rng)
        assert out.dtype == torch.uint8 and out.shape == image.shape
        bright = out[0] > 200
        if label == ERASED:
            seen["erased"] += 1
            assert int(bright.sum()) == 0  # no tumour pixel left anywhere (a tissue patch never copies it)
        elif torch.equal(out, image):
            seen["plain"] += 1
        else:
            seen["control"] += 1
            assert label == 2 and int(bright[TUMOUR].sum()) == 144 and int(bright.sum()) == 144
            changed = np.argwhere((out[0] != image[0]).numpy())
            assert changed.size and not ((changed[:, 0] >= 30) & (changed[:, 0] < 42) &
                                         (changed[:, 1] >= 20) & (changed[:, 1] < 32)).any()
    assert all(60 < seen[k] < 120 for k in ("erased", "control")), seen  # about 30% each
    assert counterfactual(image, box, 1, share=0.0, rng=rng) == (image, 1)


@pytest.mark.parametrize("ellipse", [False, True])
def test_control_region_is_like_a_tumour_region(ellipse: bool) -> None:
    image, box = head_with_tumour()
    plain = image[0].numpy() / 255.0
    rng = np.random.default_rng(1)
    sites = [(0.7, 0.6), (0.5, 0.3)]
    for _ in range(40):
        found = control_box(plain, box, 0.2, rng, sites, ellipse)
        assert found is not None and found[2:] == box[2:]
        region = region_mask(found, plain.shape, 0.2, ellipse)
        assert not (region & region_mask(box, plain.shape, 0.2, ellipse)).any()
        assert (plain[region] > 0.02).mean() >= 0.95  # on tissue, as the tumour's region is
        ys, xs = box_slices(found, plain.shape, 0.2)
        assert ys.start > 0 and xs.start > 0 and ys.stop < SIZE and xs.stop < SIZE  # never clipped
    assert control_box(plain, (0.5, 0.5, 0.9, 0.9), 0.2, rng) is None  # a tumour filling the head


def test_no_control_region_means_no_erasing() -> None:
    image, _ = head_with_tumour()
    huge = (0.5, 0.5, 0.7, 0.7)
    rng = np.random.default_rng(2)
    assert all(counterfactual(image, huge, 0, share=0.5, rng=rng) == (image, 0) for _ in range(20))


def test_ellipse_region_covers_the_box() -> None:
    box = (0.5, 0.5, 0.2, 0.1)
    ellipse = region_mask(box, (100, 100), 0.15, ellipse=True)
    rectangle = region_mask(box, (100, 100), 0.15, ellipse=False)
    assert (ellipse | ~rectangle).all() and ellipse.sum() > rectangle.sum()


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


def test_class_weights_do_not_tilt_the_erased_target() -> None:
    weights = torch.tensor([2.0, 1.0, 1.5])
    logits = torch.zeros(1, 3, requires_grad=True)
    counterfactual_loss(logits, torch.tensor([ERASED]), weights).backward()
    # the uniform answer is the minimum: no gradient at it
    assert logits.grad is not None and torch.allclose(logits.grad, torch.zeros(1, 3), atol=1e-7)
    kept = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    labels = torch.tensor([0, 1])
    assert counterfactual_loss(kept, labels, weights) == pytest.approx(
        torch.nn.functional.cross_entropy(kept, labels, weight=weights).item())


def test_label_smoothing_smooths_kept_slices_and_leaves_the_erased_target_uniform() -> None:
    logits = torch.tensor([[3.0, 0.0, -1.0], [0.5, 2.0, 0.0], [2.0, 1.0, 0.0]])
    labels = torch.tensor([0, 1, ERASED])
    kept = torch.nn.functional.cross_entropy(logits[:2], labels[:2], label_smoothing=0.2).item()
    uniform = -torch.log_softmax(logits[2], 0).mean().item()
    smoothed = counterfactual_loss(logits, labels, label_smoothing=0.2)
    assert smoothed == pytest.approx(kept * 2 / 3 + uniform / 3)
    assert smoothed != pytest.approx(counterfactual_loss(logits, labels).item())


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
