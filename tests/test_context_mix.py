"""Context mixing: a tumour shown in another slice's context, the context's own tumour erased."""

from __future__ import annotations

import numpy as np
import torch

from brain_tumor.data.context_mix import context_mixed
from brain_tumor.data.datamodule import SliceDataset

SIZE = 96


def head(tumour: tuple[slice, slice], level: float, seed: int) -> np.ndarray:
    """A disc of textured tissue with one bright square tumour (value ``level``)."""
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    texture = np.random.default_rng(seed).uniform(0.2, 0.4, (SIZE, SIZE))
    image = np.where((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.16, texture, 0.0).astype(np.float32)
    image[tumour] = level
    return image


def box_of(tumour: tuple[slice, slice]) -> tuple[float, float, float, float]:
    ys, xs = tumour
    return ((xs.start + xs.stop) / 2 / SIZE, (ys.start + ys.stop) / 2 / SIZE,
            (xs.stop - xs.start) / SIZE, (ys.stop - ys.start) / SIZE)


A_TUMOUR, B_TUMOUR = (slice(30, 42), slice(20, 32)), (slice(55, 67), slice(58, 70))


def test_the_tumour_moves_into_the_other_context_whose_tumour_is_gone() -> None:
    a, b = head(A_TUMOUR, 1.0, 0), head(B_TUMOUR, 0.8, 1)
    rng = np.random.default_rng(0)
    for _ in range(20):
        mixed = context_mixed(a, box_of(A_TUMOUR), b, box_of(B_TUMOUR), rng)
        assert mixed is not None and mixed.shape == a.shape and mixed.dtype == np.float32
        assert np.allclose(mixed[A_TUMOUR], 1.0)  # the tumour, whole, where it was
        assert not (np.abs(mixed - 0.8) < 1e-6).any()  # the context's own tumour erased
        far = (slice(75, 85), slice(40, 50))  # tissue away from both tumours: the context's, not a's
        assert np.array_equal(mixed[far], b[far]) and not np.array_equal(mixed[far], a[far])


def test_no_mix_onto_air() -> None:
    a = head(A_TUMOUR, 1.0, 0)
    air = np.zeros_like(a)
    air[70:80, 70:80] = 0.3  # a scrap of tissue far from where a's tumour would go
    assert context_mixed(a, box_of(A_TUMOUR), air, box_of((slice(70, 80), slice(70, 80))),
                         np.random.default_rng(0)) is None


def test_dataset_mixes_a_share_keeps_labels_and_only_in_training() -> None:
    images = torch.from_numpy((np.stack([head(A_TUMOUR, 1.0, 0), head(B_TUMOUR, 0.8, 1),
                                         head(A_TUMOUR, 0.9, 2)]) * 255).astype(np.uint8))[:, None]
    labels = torch.tensor([0, 1, 2])
    boxes = [box_of(A_TUMOUR), box_of(B_TUMOUR), box_of(A_TUMOUR)]
    torch.manual_seed(0)
    train = SliceDataset(images, labels, [0, 1, 2], boxes=boxes, context_mix=0.5)
    changed = 0
    for i in range(90):
        image, label = train[i % 3]
        assert label == i % 3 and image.dtype == torch.uint8 and image.shape == images[0].shape
        changed += not torch.equal(image, images[i % 3])
    assert 25 <= changed <= 60  # about half
    plain = SliceDataset(images, labels, [0, 1, 2], boxes=boxes)
    assert all(torch.equal(plain[i][0], images[i]) for i in range(3))


def test_a_seeded_dataset_mixes_the_same_way_again() -> None:
    images = torch.from_numpy((np.stack([head(A_TUMOUR, 1.0, 0), head(B_TUMOUR, 0.8, 1)]) * 255).astype(np.uint8))
    boxes = [box_of(A_TUMOUR), box_of(B_TUMOUR)]
    draws = []
    for _ in range(2):
        torch.manual_seed(7)
        data = SliceDataset(images[:, None], torch.tensor([0, 1]), [0, 1], boxes=boxes, context_mix=0.5)
        draws.append(torch.stack([data[i % 2][0] for i in range(10)]))
    assert torch.equal(draws[0], draws[1])
