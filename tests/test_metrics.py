import numpy as np
import pytest

from brain_tumor.evaluation.metrics import classification_metrics, roc_curves

CLASSES = ["glioma", "meningioma", "pituitary"]


def test_perfect_predictions() -> None:
    y = np.array([0, 1, 2, 2])
    m = classification_metrics(y, np.eye(3)[y] * 0.9 + 0.03, CLASSES)
    assert m["accuracy"] == 1.0 and m["macro_auc"] == 1.0 and m["recall"]["meningioma"] == 1.0
    assert m["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]


def test_known_mistakes() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y, np.eye(3)[pred], CLASSES)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"]["meningioma"] == pytest.approx(2 / 3)
    assert m["recall"]["glioma"] == pytest.approx(0.5)
    assert m["confusion_matrix"][2] == [1, 0, 1]
    assert m["support"] == {"glioma": 2, "meningioma": 2, "pituitary": 2}
    assert m["macro_avg"]["recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)


def test_roc_curves_end_points() -> None:
    y = np.array([0, 1, 2, 1])
    curves = roc_curves(y, np.random.default_rng(0).dirichlet(np.ones(3), 4), CLASSES)
    for fpr, tpr in curves.values():
        assert fpr[0] == 0 and tpr[-1] == 1
