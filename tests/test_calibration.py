import numpy as np
import pytest

from brain_tumor.evaluation import calibration as cal


def sampled(temperature: float, n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the model reports z * temperature (over/under-confident)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, 3))
    p = cal.softmax(z)
    labels = np.array([rng.choice(3, p=row) for row in p])
    return z * temperature, labels


def test_temperature_recovers_overconfidence() -> None:
    logits, labels = sampled(2.5)
    t = cal.fit_temperature(logits, labels)
    assert t == pytest.approx(2.5, rel=0.1)
    before = cal.expected_calibration_error(cal.softmax(logits), labels)
    after = cal.expected_calibration_error(cal.softmax(logits, t), labels)
    assert after < before / 2 and after < 0.03


def test_ece_of_a_perfect_confident_model_is_zero() -> None:
    labels = np.array([0, 1, 2, 1])
    assert cal.expected_calibration_error(np.eye(3)[labels], labels) == 0.0


def test_threshold_meets_the_target_risk() -> None:
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    correct = np.array([1, 1, 1, 0, 1, 0], bool)
    assert cal.threshold_for_risk(conf, correct, 0.0) == 0.9
    assert cal.threshold_for_risk(conf, correct, 0.2) == 0.7
    assert cal.threshold_for_risk(conf, np.zeros(6, bool), 0.1) > 1.0
    _, coverage, risk = cal.risk_coverage(conf, correct)
    assert coverage[-1] == 1 and risk[-1] == pytest.approx(2 / 6)
