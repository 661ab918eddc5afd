import numpy as np
import pytest

from brain_tumor.explain.localisation import box_mask, energy_in_box, pointing_hit


def test_box_mask_and_tolerance() -> None:
    mask = box_mask((0.5, 0.5, 0.25, 0.5), (8, 8))
    assert mask.sum() == 2 * 4 and mask[2:6, 3:5].all()
    assert box_mask((0.5, 0.5, 0.25, 0.5), (8, 8), tolerance_px=1).sum() == 4 * 6


def test_pointing_and_energy() -> None:
    cam = np.zeros((100, 100))
    cam[20, 20] = 1.0
    cam[70:80, 70:80] = 0.5
    box = (0.75, 0.75, 0.1, 0.1)
    assert not pointing_hit(cam, box, tolerance_px=5)
    assert pointing_hit(cam, (0.2, 0.2, 0.02, 0.02), tolerance_px=2)
    assert energy_in_box(cam, box) == pytest.approx(50 / 51)
    assert energy_in_box(np.zeros((4, 4)), box) == 0.0
