import numpy as np
import pytest

from brain_tumor.evaluation.statistics import accuracy, bootstrap_ci, class_recall, mcnemar, patient_level


def test_patient_level_averages_probabilities() -> None:
    y = np.array([0, 0, 1])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    labels, probs = patient_level(y, p, ["a", "a", "b"])
    assert labels.tolist() == [0, 1]
    np.testing.assert_allclose(probs[0], [0.55, 0.45])


def test_bootstrap_resamples_patients_not_slices() -> None:
    # one patient with 50 wrong slices, 10 patients with one right slice each
    y = np.zeros(60, int)
    p = np.tile([1.0, 0.0], (60, 1))
    p[:50] = [0.0, 1.0]
    groups = ["bad"] * 50 + [f"p{i}" for i in range(10)]
    point, low, high = bootstrap_ci(accuracy, y, p, groups, n_boot=500)
    assert point == pytest.approx(10 / 60)
    assert low < 0.15 and high == 1.0  # the whole patient is in or out; a slice bootstrap would stay near 0.17


def test_mcnemar() -> None:
    a = np.array([True] * 20 + [False] * 2 + [True] * 50)
    b = np.array([False] * 20 + [True] * 2 + [True] * 50)
    result = mcnemar(a, b)
    assert result["a_right_b_wrong"] == 20 and result["a_wrong_b_right"] == 2
    assert result["p_value"] < 0.001
    assert mcnemar(a, a)["p_value"] == 1.0


def test_class_recall() -> None:
    y = np.array([1, 1, 0])
    p = np.array([[0.1, 0.9], [0.8, 0.2], [0.9, 0.1]])
    assert class_recall(1)(y, p) == 0.5
