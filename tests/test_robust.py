"""Robust preprocessing, shift-family augmentation and the shift benchmark's shifts."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from brain_tumor.data.preprocess import head_box, pad_to_square, prepare_slice, robust_slice, standardise_intensity
from brain_tumor.evaluation.shift import SHIFTS, shifted
from brain_tumor.transforms import LightShiftPreset, PaperTrainPreset, train_preset
from tests.conftest import synthetic_slice


def framed(image: np.ndarray, border: int, text: bool = True) -> np.ndarray:
    """``image`` on a larger black canvas, off-centre, with a burned-in bright 'text' strip."""
    h, w = image.shape
    out = np.zeros((h + 2 * border, w + 3 * border), np.float32)
    out[border:border + h, 2 * border:2 * border + w] = image
    if text:
        out[4:8, 4:4 + border] = 1.0  # thin annotation in the corner
    return out


def head() -> np.ndarray:
    return synthetic_slice(np.random.default_rng(0), 1, 128).astype(np.float32) / 255


def test_head_box_ignores_borders_and_text() -> None:
    image = framed(head(), 64)
    y0, y1, x0, x1 = head_box(image)
    # the head disc spans about 0.1..0.9 of the 128-px slice placed at (64, 128)
    assert 64 + 5 <= y0 <= 64 + 20 and 64 + 108 <= y1 <= 64 + 125
    assert 128 + 5 <= x0 <= 128 + 20 and 128 + 108 <= x1 <= 128 + 125


@pytest.mark.parametrize("remap", [lambda x: x**3, lambda x: x**0.4, lambda x: 0.3 + 0.5 * x, lambda x: 0.05 * x])
def test_head_box_ignores_gamma_gain_and_offset(remap) -> None:
    image = framed(head(), 40)
    assert head_box(np.clip(remap(image), 0, 1).astype(np.float32)) == head_box(image)


def test_head_box_survives_noise() -> None:
    image = framed(head(), 40, text=False)
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 0.1, image.shape), 0, 1).astype(np.float32)
    clean, shifted_box = head_box(image), head_box(noisy)
    assert all(abs(a - b) <= 6 for a, b in zip(clean, shifted_box))


def test_robust_pipeline_undoes_framing_and_range() -> None:
    image = head()
    a = prepare_slice(image, 64, "robust").astype(float)
    b = prepare_slice(framed(image * 0.06, 100), 64, "robust").astype(float)  # looser framing, 12-bit-in-16 range
    paper_a = prepare_slice(image, 64, "paper").astype(float)
    paper_b = prepare_slice(framed(image * 0.06, 100), 64, "paper").astype(float)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    assert np.corrcoef(paper_a.ravel(), paper_b.ravel())[0, 1] < 0.5
    assert abs(a.mean() - b.mean()) < 10


def test_pad_keeps_aspect_and_blank_image_survives() -> None:
    assert pad_to_square(np.ones((10, 30), np.float32)).shape == (30, 30)
    assert pad_to_square(np.ones((10, 30), np.float32))[:10].sum() == 0
    blank = np.zeros((50, 70), np.float32)
    assert robust_slice(blank).shape == (70, 70) and robust_slice(blank).max() == 0
    assert prepare_slice(blank, 32, "robust").shape == (32, 32)
    with pytest.raises(ValueError):
        prepare_slice(blank, 32, "fancy")


def test_standardise_clips_to_percentiles() -> None:
    x = np.linspace(0, 0.1, 1000, dtype=np.float32).reshape(10, 100)
    out = standardise_intensity(x, None)
    assert out.min() == 0 and out.max() == 1


@pytest.mark.parametrize("name", ["robust", "robust-light", "robust-mid", "torchio"])
def test_robust_augmentation_keeps_format_and_changes_pixels(name: str) -> None:
    torch.manual_seed(0)
    x = torch.from_numpy(synthetic_slice(np.random.default_rng(1), 2, 64)).unsqueeze(0)
    augment = train_preset(name)
    outs = [augment(x) for _ in range(8)]
    assert all(o.dtype == torch.uint8 and o.shape == x.shape for o in outs)
    assert sum(not torch.equal(o, x) for o in outs) == 8
    assert len({o.float().mean().item() for o in outs}) > 4


def test_torchio_artefacts_are_seeded_in_plane_and_on_a_minority() -> None:
    from brain_tumor.transforms import TorchIOPreset

    x = torch.from_numpy(synthetic_slice(np.random.default_rng(1), 2, 64)).unsqueeze(0)
    preset = TorchIOPreset()
    draws = []
    for _ in range(2):
        torch.manual_seed(3)
        random.seed(3)
        draws.append(preset(x))
    assert torch.equal(draws[0], draws[1])  # TorchIO follows torch's seed: a seeded run repeats
    flat = x.float() / 255
    touched = 0
    for seed in range(40):
        torch.manual_seed(seed)
        out = preset._artefacts(flat)
        assert out.shape == flat.shape and torch.isfinite(out).all()
        touched += not torch.allclose(out, flat)
    # each artefact on a minority: about a quarter of the slices (0.7 * 0.7 * 0.8 ** 3) come through untouched
    assert 20 <= touched <= 38


def test_light_augmentation_is_the_paper_set_plus_occasional_intensity_shifts() -> None:
    x = torch.from_numpy(synthetic_slice(np.random.default_rng(1), 2, 64)).unsqueeze(0)

    def draw(augment: object, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        random.seed(seed)
        return augment(x)  # type: ignore[operator]

    paper, none_applied = PaperTrainPreset(), LightShiftPreset(p_gamma=0, p_downup=0, p_noise=0)
    always_gamma = LightShiftPreset(gammas=(2.5, 3.0), p_gamma=1, p_downup=0, p_noise=0)
    for seed in range(4):
        assert torch.equal(draw(none_applied, seed), draw(paper, seed))
        darker = draw(always_gamma, seed).float().mean()
        assert darker < draw(paper, seed).float().mean()


@pytest.mark.parametrize("family", sorted(SHIFTS))
def test_shifts_are_images_and_reproducible(family: str) -> None:
    image = head()
    for severity in range(3):
        out = shifted(image, family, severity, seed=3)
        assert out.ndim == 2 and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
        assert np.array_equal(out, shifted(image, family, severity, seed=3))
    assert not np.allclose(shifted(image, family, 2, 0)[:128, :128], image, atol=1e-3)


def test_shift_severity_grows() -> None:
    image = head()
    noise = [np.abs(shifted(image, "noise", k, 0) - image).mean() for k in range(3)]
    assert noise[0] < noise[1] < noise[2]
    framing = [shifted(image, "framing", k, 0).shape[0] for k in range(3)]
    assert framing[0] < framing[1] < framing[2]


def test_map_box_follows_crop_and_padding() -> None:
    from brain_tumor.data.preprocess import map_box

    image = framed(head(), 64, text=False)
    h, w = image.shape
    # a box around the 'meningioma' blob of the synthetic slice, at (0.5, 0.7) of the 128-px head
    box = ((128 + 0.7 * 128) / w, (64 + 0.5 * 128) / h, 26 / w, 26 / h)
    cx, cy, bw, bh = map_box(box, image, "robust")
    out = prepare_slice(image, 128, "robust")
    y, x = int(cy * 128), int(cx * 128)
    assert out[y - 3:y + 4, x - 3:x + 4].mean() > 200  # the blob is where the mapped box says
    assert map_box(box, image, "paper") == box
